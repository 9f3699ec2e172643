"""The command line that starts one native run in its sandbox.

Three stages, each ``exec``-ing the next in one process: a shell joins the run's
cgroup and sets the rlimits; ``unshare`` makes a user namespace (the caller mapped
to its root) with a mount namespace of its own, where the shell mounts the overlay
(lower: the tenant's tree at the run's layer; upper: the run's changes) with
``userxattr``; bubblewrap then builds the sandbox: new user, PID, IPC, UTS, network
and cgroup namespaces, no capabilities, no further user namespaces, ``no_new_privs``,
the seccomp filter, and a root of its own that holds only what is listed below,
read-only: the host's /usr (its git, python, gcc, node and their packages), a few
files of /etc, an empty /tmp and $HOME on a size-limited tmpfs, and the workspace.
Where overlayfs cannot be mounted, the workspace is the run's own copy instead and the
middle stage is left out (bubblewrap makes the user namespace itself).

The host's home, TARBOX_HOME, the database's sockets (/run, /tmp, /var) and every
other tenant's files are not in that root, so nothing there can name them; abstract
unix sockets belong to the network namespace, which is empty.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tarbox.sandbox.network import NET_DIR

SANDBOX_UID = SANDBOX_GID = 1000
USER = "agent"
HOME = "/tmp/home"
WORKSPACE = "/workspace"
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
# the host's files the sandbox may read, when they exist: the loader's cache, TLS roots,
# time zone, MIME types, and the alternatives that /usr/bin's links go through
ETC_SHARED = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "localtime",
    "mime.types",
)
# no index, inode numbers or metacopy: none is needed for one run's changes, and
# userxattr is what an unprivileged (user namespace) mount may use
OVERLAY_OPTIONS = "userxattr,index=off,xino=off,metacopy=off"
SETUP_FAILED = 125  # the launcher's own exit status when it cannot build the sandbox
_READY = "/tmp/.tarbox-net-ready"
BRIDGE_FIRST = (
    f"python3 -I -S {NET_DIR}/bridge.py {_READY} & i=0; while [ ! -e {_READY} ]; do i=$((i+1)); "
    '[ $i -gt 1000 ] && { echo "tarbox: the network bridge did not start (python3 is needed)" >&2; '
    f'exit {SETUP_FAILED}; }}; sleep 0.01; done; exec "$@"'
)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def write_etc(etc: Path) -> None:
    """The sandbox's own /etc/passwd, group and hosts (the host's are not shown)."""
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n{USER}:x:{SANDBOX_UID}:{SANDBOX_GID}:{USER}:{HOME}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\n{USER}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")


@dataclass(frozen=True, slots=True)
class Overlay:
    """The run's overlay: ``lower`` (the tree at the run's layer, read-only) under
    ``upper`` (the run's changes); ``work`` is overlayfs's own."""

    lower: Path
    upper: Path
    work: Path

    def options(self) -> str:
        return f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work},{OVERLAY_OPTIONS}"


def command_line(
    *,
    overlay: Overlay | None,
    workspace: Path,
    etc: Path,
    argv: list[str],
    cwd: str,
    env: dict[str, str],
    cgroup_procs: list[str],
    ulimits: str,
    seccomp_fd: int | None,
    status_fd: int,
    tmp_bytes: int,
    net_dir: Path | None = None,
) -> list[str]:
    """The launcher's argv (see the module docstring). ``overlay``: mounted at
    ``workspace`` first; without one, ``workspace`` is a directory of the run's own (a
    copy: copied.py), bound as it is. ``net_dir``: the run's egress proxy socket and
    bridge (network.py), shown at /run/tarbox; the command then starts once the bridge
    listens."""
    join = (
        f'{ulimits}; for f do [ "$f" = -- ] && break; echo $$ > "$f" || exit {SETUP_FAILED}; shift; done; '
        'shift; exec "$@"'
    )
    mount = (
        'mount -t overlay overlay -o "$1" "$2" || '
        f'{{ echo "tarbox: cannot mount the run\'s overlay" >&2; exit {SETUP_FAILED}; }}; shift 2; exec "$@"'
    )
    bwrap = [
        bwrap_path() or "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_GID),
        "--hostname",
        "tarbox",
        "--json-status-fd",
        str(status_fd),
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        host = Path("/") / top
        if host.is_symlink():
            bwrap += ["--symlink", os.readlink(host), f"/{top}"]
        elif host.is_dir():
            bwrap += ["--ro-bind", str(host), f"/{top}"]
    for name in ETC_SHARED:
        if os.path.exists(f"/etc/{name}"):
            bwrap += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts"):
        bwrap += ["--ro-bind", str(etc / name), f"/etc/{name}"]
    bwrap += ["--proc", "/proc", "--dev", "/dev"]
    bwrap += ["--size", str(tmp_bytes), "--tmpfs", "/tmp", "--dir", HOME]
    if net_dir is not None:
        bwrap += ["--ro-bind", str(net_dir), NET_DIR]
    bwrap += ["--bind", str(workspace), WORKSPACE, "--remount-ro", "/", "--chdir", cwd]
    bwrap += ["--clearenv"]
    for key, value in env.items():
        bwrap += ["--setenv", key, value]
    if seccomp_fd is not None:
        bwrap += ["--seccomp", str(seccomp_fd)]
    if net_dir is not None:
        argv = ["/bin/sh", "-c", BRIDGE_FIRST, "sh", *argv]
    bwrap += ["--", *argv]
    launcher = ["/bin/sh", "-c", join, "sh", *cgroup_procs, "--"]
    if overlay is None:  # bubblewrap makes the user namespace itself
        return [*launcher, *bwrap]
    unshare = shutil.which("unshare") or "unshare"
    mount_first = [unshare, "--user", "--map-root-user", "--mount", "--", "/bin/sh", "-c", mount, "sh"]
    return [*launcher, *mount_first, overlay.options(), str(workspace), *bwrap]


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": PATH,
        "HOME": HOME,
        "USER": USER,
        "LOGNAME": USER,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PWD": WORKSPACE,
    }
    env.update(extra or {})
    return env
