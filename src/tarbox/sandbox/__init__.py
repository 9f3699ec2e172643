"""Native commands (git, bash, python, gcc, node from the host's /usr) sandboxed over a
tenant's workspace: bubblewrap namespaces, seccomp and cgroup limits, an overlay on a
local copy of the workspace at a checkpoint, and the changes written back in one atomic
commit (docs/exec.md)."""

from tarbox.sandbox.caches import Pruned, prune_local_caches
from tarbox.sandbox.host import NativeHost, SandboxUnavailable, overlay_unavailable_reason, unavailable_reason
from tarbox.sandbox.limits import Limits
from tarbox.sandbox.result import ExecResult, ExecStatus

__all__ = [
    "ExecResult",
    "ExecStatus",
    "Limits",
    "NativeHost",
    "Pruned",
    "SandboxUnavailable",
    "overlay_unavailable_reason",
    "prune_local_caches",
    "unavailable_reason",
]
