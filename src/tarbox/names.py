"""The names users choose (tenants, branches): what they may be. Shared by the client
and the filesystem, below both."""

from __future__ import annotations

import re

from tarbox.errors import InvalidNameError

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def _validate_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid {kind} name {name!r}: use 1-63 characters a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


def validate_tenant_name(name: str) -> str:
    return _validate_name("tenant", name)


def validate_branch_name(name: str) -> str:
    return _validate_name("branch", name)
