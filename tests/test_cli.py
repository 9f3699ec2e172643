"""The `tarbox` command, run as a real subprocess against the test database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

from tarbox.sandbox import unavailable_reason


@pytest.fixture
def run(db_url):
    exe = shutil.which("tarbox")
    assert exe, "the tarbox console script is not installed"

    def _run(*args: str, input: bytes | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "TARBOX_DATABASE_URL": db_url}  # as the test has it now (monkeypatch)
        p = subprocess.run([exe, *args], input=input, capture_output=True, env=env, timeout=60)
        if ok:
            assert p.returncode == 0, p.stderr.decode()
        return p

    return _run


def test_tenant_lifecycle_and_files(run, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    assert name in json.loads(run("--json", "tenant", "list").stdout)[-1]["name"] or any(
        t["name"] == name for t in json.loads(run("--json", "tenant", "list").stdout)
    )
    t = ["--tenant", name]
    run(*t, "mkdir", "-p", "/w/sub")
    run(*t, "write", "/w/a.txt", "hello")
    run(*t, "write", "--append", "/w/a.txt", input=b" world")
    assert run(*t, "cat", "/w/a.txt").stdout == b"hello world"
    run(*t, "mv", "/w/a.txt", "/w/sub/b.txt")
    listing = json.loads(run("--json", *t, "ls", "/w/sub").stdout)
    assert [(e["path"], e["size"], e["type"]) for e in listing] == [("b.txt", 11, "file")]
    assert json.loads(run("--json", *t, "stat", "/w/sub/b.txt").stdout)["size"] == 11

    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "deep" / "x.bin").write_bytes(os.urandom(3 << 20))
    (src / "y.txt").write_text("y")
    os.symlink("y.txt", src / "link")
    run(*t, "put", str(src), "/w/src")
    run(*t, "get", "/w/src", str(tmp_path / "back"))
    back = tmp_path / "back"
    assert (back / "deep" / "x.bin").read_bytes() == (src / "deep" / "x.bin").read_bytes()
    assert (back / "y.txt").read_text() == "y" and os.readlink(back / "link") == "y.txt"

    run(*t, "rm", "-r", "/w/src")
    run(*t, "rm", "/w/sub/b.txt")
    run(*t, "rmdir", "/w/sub")
    info = json.loads(run("--json", "tenant", "info", name).stdout)
    assert info["used_bytes"] == 0 and info["used_inodes"] == 2
    run("tenant", "delete", "--yes", name)


def test_errors_are_one_line_and_nonzero(run):
    p = run("--tenant", "no-such-tenant", "ls", "/", ok=False)
    assert p.returncode == 1
    assert p.stderr.decode().strip().count("\n") == 0 and "no-such-tenant" in p.stderr.decode()
    assert b"Traceback" not in p.stderr
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    p = run("--tenant", name, "cat", "/missing", ok=False)
    assert p.returncode == 1 and b"No such file" in p.stderr and b"Traceback" not in p.stderr
    p = run("tenant", "create", "Not Valid", ok=False)
    assert p.returncode == 1 and b"invalid tenant name" in p.stderr
    run("tenant", "delete", "--yes", name)


def test_errors_say_what_to_try_next(run):
    p = run("--tenant", "no-such-tenant", "ls", "/", ok=False)
    assert b"try: tarbox tenant list" in p.stderr
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    p = run("--tenant", name, "cat", "/nope/x", ok=False)
    assert b"try: tarbox ls /nope" in p.stderr and p.stderr.decode().count("\n") == 1
    run("tenant", "delete", "--yes", name)


def test_doctor_checks_the_setup(run, tmp_path):
    checks = json.loads(run("--json", "doctor").stdout)
    by = {c["check"]: c for c in checks}
    for name in ("python", "database", "schema", "row-level security", "wasmtime", "module cache"):
        assert by[name]["ok"], by[name]
    assert by["native sandbox"]["ok"] is (unavailable_reason() is None)  # optional: said either way
    p = run("--url", f"host={tmp_path} dbname=nothing-here", "doctor", ok=False)
    assert p.returncode == 1
    assert b"FAIL database" in p.stdout and b"TARBOX_DATABASE_URL" in p.stdout, p.stdout


def test_shell_completion_script(run, monkeypatch):
    # typer detects the calling shell (shellingham) unless told not to; under a parent that
    # is not a shell it then read "bash" as a command, so the test depended on its parent
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    script = run("--show-completion", "bash").stdout.decode()
    assert "_tarbox_completion" in script and "complete" in script


def test_version_and_db_status(run):
    assert run("--version").stdout.startswith(b"tarbox ")
    assert json.loads(run("--json", "db", "status").stdout)["schema_version"] >= 1


def test_checkpoint_log_switch_diff(run):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    t = ["--tenant", name]
    run(*t, "write", "/a", "one")
    cp = json.loads(run("--json", *t, "checkpoint", "-m", "first").stdout)
    assert cp["frozen"] and cp["message"] == "first"
    run(*t, "write", "/a", "two")
    run(*t, "write", "/b", "new")
    log = json.loads(run("--json", *t, "log").stdout)
    assert log[0]["head"] and log[0]["parent"] == cp["id"] and log[1]["id"] == cp["id"]
    assert log[0]["counts"] == {"added": 1, "modified": 1, "deleted": 0, "bytes": 6}
    assert log[1]["counts"] == {"added": 1, "modified": 0, "deleted": 0, "bytes": 3}
    assert b"first" in run(*t, "log").stdout
    changes = json.loads(run("--json", *t, "diff", str(cp["id"])).stdout)
    assert {(c["path"], c["kind"]) for c in changes} == {("/a", "modified"), ("/b", "added")}
    run(*t, "switch", str(cp["id"]))
    assert run(*t, "cat", "/a").stdout == b"one"
    p = run(*t, "switch", "999999999", ok=False)
    assert p.returncode == 1 and b"does not exist" in p.stderr
    run("tenant", "delete", "--yes", name)


def test_branch_commands(run):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    t = ["--tenant", name]
    run(*t, "write", "/a", "one")
    run(*t, "branch", "feature")
    run(*t, "switch", "feature")
    run(*t, "write", "/a", "two")
    branches = {b["name"]: b for b in json.loads(run("--json", *t, "branch").stdout)}
    assert set(branches) == {"main", "feature"} and branches["feature"]["current"]
    run(*t, "switch", "main")
    assert run(*t, "cat", "/a").stdout == b"one"
    feature_head = branches["feature"]["head"]
    p = run(*t, "layer", "drop", str(feature_head), ok=False)
    assert p.returncode == 1 and b"branch feature" in p.stderr
    run(*t, "branch", "--delete", "feature")
    dropped = json.loads(run("--json", *t, "layer", "drop", str(feature_head)).stdout)
    assert dropped["dropped"] == [feature_head] and dropped["freed_bytes"] >= 3
    assert set(json.loads(run("--json", *t, "branch").stdout)[0]) >= {"name"}
    run("tenant", "delete", "--yes", name)


def test_demo_of_the_quick_start_runs(run):
    out = run("demo").stdout.decode()
    assert "rolled back to layer" in out and "lib has 500 files again" in out
    assert "sees its own empty root: []" in out


def test_run_a_wasm_agent(run, tmp_path):
    from pathlib import Path

    from tarbox.wasi.toolchain import build_c

    wasm = tmp_path / "agent.wasm"
    wasm.write_bytes(build_c(Path(__file__).parents[1] / "examples" / "agent.c"))
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    t = ["--tenant", name]
    run(*t, "mkdir", "/workspace")
    run(*t, "write", "/workspace/input.txt", "one two\nthree\n")
    p = run(*t, "run", str(wasm), "-v", "--checkpoint", "--", "mytask")
    assert p.stdout == b"agent: mytask -> 2 lines, 3 words; 1 file(s) in out/\n"
    assert b"exited exit=0" in p.stderr and b"checkpoint=" in p.stderr
    assert b"words: 3" in run(*t, "cat", "/workspace/out/report.md").stdout
    run(*t, "rm", "/workspace/input.txt")
    p = run(*t, "run", str(wasm), ok=False)  # the guest's own exit code comes back
    assert p.returncode == 1 and b"no /workspace/input.txt" in p.stderr
    p = run(*t, "run", str(wasm), "--read-only", "--dir", "/nothing-here", ok=False)
    assert p.returncode == 1 and b"preopen" in p.stderr
    run("tenant", "delete", "--yes", name)


def test_run_python_and_rust_agents_from_source(run):
    from pathlib import Path

    from tarbox.wasi.toolchain import rustc

    examples = Path(__file__).parents[1] / "examples"
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    t = ["--tenant", name]
    run(*t, "mkdir", "/workspace")
    run(*t, "write", "/workspace/n.txt", "a b c")
    p = run(*t, "run", str(examples / "agent.py"), "--", "py")
    assert p.stdout == b"task py: 1 text files, 3 words\n"
    assert json.loads(run(*t, "cat", "/workspace/out/report.json").stdout)["words"] == {"n.txt": 3}
    assert run(*t, "ls", "/").stdout.split() == [b"workspace/"]  # the script is served, not copied in
    if rustc() is not None:
        p = run(*t, "run", str(examples / "agent.rs"), "--", "rs")
        assert p.stdout == b"task rs: 2 text files, 8 words\n"  # n.txt (3) and out/log.txt (5)
    assert run(*t, "cat", "/workspace/out/log.txt").stdout.startswith(b"python agent ran task py\n")
    run("tenant", "delete", "--yes", name)


def test_run_a_component_agent(run):
    """`tarbox run --component agent.c` builds a WASI 0.2 component and runs it; the
    same agent as a prebuilt .component.wasm file runs too (detected by its header)."""
    from pathlib import Path

    examples = Path(__file__).parents[1] / "examples"
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    t = ["--tenant", name]
    run(*t, "mkdir", "/workspace")
    run(*t, "write", "/workspace/input.txt", "one two\nthree\n")
    p = run(*t, "run", "--component", str(examples / "agent.c"), "-v", "--", "p2task")
    assert p.stdout == b"agent: p2task -> 2 lines, 3 words; 1 file(s) in out/\n"
    assert b"exited exit=0" in p.stderr
    assert b"p2task" in run(*t, "cat", "/workspace/agent.log").stdout
    run("tenant", "delete", "--yes", name)


def test_piped_tables_keep_every_value_whole(run):
    """Off a terminal (stdout is a pipe here) every table row is one line of tab-separated
    values, nothing truncated or wrapped: `tarbox audit | grep data.csv` finds the file."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    t = ["--tenant", name]
    deep = "/workspace/" + "long-directory-name-" * 6 + "x"  # wider than any 80-column table
    path = f"{deep}/data.csv"
    message = "a checkpoint message long enough to be cut or wrapped by an 80-column table"
    run(*t, "mkdir", "-p", deep)
    run(*t, "write", path, "a,b\n1,2\n")
    run(*t, "checkpoint", "-m", message)
    run(*t, "write", f"{deep}/tab\there", "x")

    audit = run(*t, "audit").stdout.decode().splitlines()
    hits = [line.split("\t") for line in audit if "data.csv" in line]
    assert [(h[3], h[4]) for h in hits] == [("create", path), ("write", path)]
    assert all(len(line.split("\t")) == 8 for line in audit)
    assert any(f"{deep}/tab\\there" in line for line in audit)  # a tab in a value is escaped

    listing = run(*t, "ls", "-l", deep).stdout.decode().splitlines()
    assert sorted(line.split("\t")[4] for line in listing) == ["data.csv", "tab\\there"]
    log = run(*t, "log").stdout.decode().splitlines()
    assert [line.split("\t")[7] for line in log][-1] == message
    tenants = [line.split("\t")[0] for line in run("tenant", "list").stdout.decode().splitlines()]
    assert name in tenants


@pytest.mark.parametrize(
    "command",
    [["audit"], ["log"], ["ls", "/"], ["stat", "/"], ["tenant", "list"], ["db", "status"], ["fsck"]],
    ids=lambda c: " ".join(c),
)
def test_json_after_the_subcommand(run, command):
    """`tarbox audit --json` is what users type; it means `tarbox --json audit`."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run("tenant", "create", name)
    after = json.loads(run("--tenant", name, *command, "--json").stdout)
    before = json.loads(run("--json", "--tenant", name, *command).stdout)
    assert type(after) is type(before) and (isinstance(after, dict) or len(after) == len(before))


def test_tarbox_run_serves_the_scripts_directory(run, tmp_path):
    """`tarbox run dir/main.py`: main imports its sibling; the tenant holds only what the
    script wrote; a script already in the tenant runs where it lies."""
    (tmp_path / "helper.py").write_text("NAME = 'helper'\n")
    (tmp_path / "main.py").write_text(
        "import sys, helper\nopen('out.txt', 'w').write(helper.NAME + ' ' + ' '.join(sys.argv[1:]))\n"
        "print(helper.NAME, sys.argv[1:])\n"
    )
    name = f"cli-py-{os.urandom(4).hex()}"
    run("tenant", "create", name)
    t = ["--tenant", name]
    run(*t, "mkdir", "/workspace")
    p = run(*t, "run", str(tmp_path / "main.py"), "--", "a", "b")
    assert p.stdout == b"helper ['a', 'b']\n"
    assert run(*t, "cat", "/workspace/out.txt").stdout == b"helper a b"
    assert run(*t, "ls", "/").stdout.split() == [b"workspace/"]
    run(*t, "write", "/workspace/inside.py", "print(open('out.txt').read())")
    assert run(*t, "run", "/workspace/inside.py").stdout == b"helper a b\n"
    run("tenant", "delete", "--yes", name)
