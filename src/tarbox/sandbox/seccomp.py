"""The seccomp filter of native runs: a classic BPF program, built here, that bubblewrap
loads (``bwrap --seccomp FD``) just before it executes the command.

It is a deny list, as Docker's and Flatpak's are: the system calls a sandboxed build
or test never needs and that are the usual ways out of a namespace or into the
kernel (mounting, other processes' memory, kernel keyrings, bpf, modules, io_uring,
namespaces, the clock) fail with EPERM; everything else is allowed. Another
architecture than the one compiled for, and x32 system calls on x86-64, kill the
process: a filter keyed by system call numbers means nothing there.
"""

from __future__ import annotations

import errno
import platform
import struct

# x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl, a stable ABI).
# tests/test_sandbox.py checks them against the kernel headers when they are installed.
DENIED_X86_64 = {
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "unshare": 272,
    "setns": 308,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "create_module": 174,
    "get_kernel_syms": 177,
    "query_module": 178,
    "bpf": 321,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "settimeofday": 164,
    "clock_settime": 227,
    "clock_adjtime": 305,
    "adjtimex": 159,
    "iopl": 172,
    "ioperm": 173,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "syslog": 103,
    "vhangup": 153,
    "uselib": 134,
    "ustat": 136,
    "sysfs": 139,
    "_sysctl": 156,
    "nfsservctl": 180,
}

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
# classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_RET_KILL_PROCESS = 0x80000000
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_NR, _ARCH = 0, 4  # offsets in struct seccomp_data


class SeccompUnavailable(RuntimeError):
    """No filter for this machine's architecture."""


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def deny_list_program(machine: str | None = None) -> bytes:
    """The filter as bubblewrap reads it: an array of ``struct sock_filter``."""
    machine = machine or platform.machine()
    if machine != "x86_64":
        raise SeccompUnavailable(f"no seccomp filter for {machine} (x86_64 only)")
    eperm = _RET_ERRNO | errno.EPERM
    prog = [
        _insn(_LD_W_ABS, 0, 0, _ARCH),
        _insn(_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0, 0, _NR),
        _insn(_JGE_K, 0, 1, _X32_BIT),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),
    ]
    for nr in sorted(set(DENIED_X86_64.values())):
        prog += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, eperm)]
    prog.append(_insn(_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(prog)
