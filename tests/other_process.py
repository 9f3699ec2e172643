"""Run Python code in another process on the same database: what "another
process" means for close-to-open visibility and for the tenant locks."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def spawn_writer(db_url: str, tenant, body: str, **popen) -> subprocess.Popen:
    """Run ``body`` in another Python process with ``fs`` open on ``tenant``."""
    head = f"import tarbox\nfs = tarbox.connect({db_url!r}).filesystem({str(tenant.id)!r})\n"
    return subprocess.Popen([sys.executable, "-c", head + textwrap.dedent(body)], **popen)
