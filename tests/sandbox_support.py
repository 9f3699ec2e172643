"""The workspace native runs are tested and measured on (tests/test_sandbox.py,
bench/exec_bench.py): a 200-file Python project with a 50-test pytest suite, a local
package to build a wheel of, and pytest itself (pure Python, copied from this
environment: the sandbox has no network to install it)."""

from __future__ import annotations

from pathlib import Path

import _pytest
import iniconfig
import packaging
import pluggy
import pytest


def python_project() -> dict[str, bytes]:
    """Workspace-relative path -> content."""
    files = {f"proj/mod{i}.py": f"def f{i}(x):\n    return x + {i}\n".encode() for i in range(150)}
    files["proj/__init__.py"] = b""
    files["tests/test_all.py"] = "".join(
        f"from proj.mod{i} import f{i}\ndef test_{i}():\n    assert f{i}(1) == {i + 1}\n" for i in range(50)
    ).encode()
    files["mypkg/pyproject.toml"] = (
        b'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        b'[project]\nname = "mypkg"\nversion = "1.0"\n'
    )
    files["mypkg/mypkg/__init__.py"] = b"ANSWER = 42\n"
    for mod in (_pytest, pytest, pluggy, iniconfig, packaging):
        top = Path(mod.__file__).parent
        for p in top.rglob("*.py"):
            files[f"vendor/{top.name}/{p.relative_to(top)}"] = p.read_bytes()
    files["vendor/py.py"] = Path(pytest.__file__).parent.parent.joinpath("py.py").read_bytes()
    return files
