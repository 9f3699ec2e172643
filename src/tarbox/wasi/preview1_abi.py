"""The ``wasi_snapshot_preview1`` ABI as data: the module's name, the type codes and
flag bits, the layouts of the structs a guest's memory holds, and each imported
function's parameter types. What the functions do is ``preview1.py``'s."""

from __future__ import annotations

import struct

from tarbox.wasi.core import DESCRIPTOR_TYPES
from tarbox.wasi.types import DescriptorType

MODULE = "wasi_snapshot_preview1"

# filetype
FT_UNKNOWN, FT_BLOCK, FT_CHAR, FT_DIR, FT_FILE, FT_SOCKET_STREAM, FT_SYMLINK = 0, 1, 2, 3, 4, 6, 7
FILETYPE = {  # preview1 has no FIFO type: unknown, as wasmtime says
    DescriptorType.REGULAR_FILE: FT_FILE,
    DescriptorType.DIRECTORY: FT_DIR,
    DescriptorType.SYMBOLIC_LINK: FT_SYMLINK,
    DescriptorType.FIFO: FT_UNKNOWN,
    DescriptorType.SOCKET: FT_SOCKET_STREAM,
    DescriptorType.CHARACTER_DEVICE: FT_CHAR,
    DescriptorType.BLOCK_DEVICE: FT_BLOCK,
}
FILETYPE_OF = {kind: FILETYPE[t] for kind, t in DESCRIPTOR_TYPES.items()}
# fdflags / oflags / fstflags / whence
FDF_APPEND, FDF_DSYNC, FDF_NONBLOCK, FDF_RSYNC, FDF_SYNC = 1, 2, 4, 8, 16
FST_ATIM, FST_ATIM_NOW, FST_MTIM, FST_MTIM_NOW = 1, 2, 4, 8
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1


IOVEC = struct.Struct("<II")
LE_U32 = struct.Struct("<I")
LE_U64 = struct.Struct("<Q")
FDSTAT = struct.Struct("<BxHxxxxQQ")  # filetype, flags, rights base, rights inheriting (24 bytes)
FILESTAT = struct.Struct("<QQBxxxxxxxQQQQQ")  # dev ino filetype nlink size atim mtim ctim (64 bytes)
DIRENT = struct.Struct("<QQIBxxx")  # d_next d_ino d_namlen d_type (24 bytes)
PRESTAT = struct.Struct("<BxxxI")
SUBSCRIPTION_CLOCK = struct.Struct("<IxxxxQQH")  # id, timeout, precision, flags (at offset 16)
EVENT = struct.Struct("<QHBxxxxxQHxxxxxx")  # userdata errno type, nbytes flags (32 bytes)


# parameter types per function: i = i32, I = i64 (all return an errno i32 except proc_exit)
SIGNATURES = {
    "args_get": "ii",
    "args_sizes_get": "ii",
    "environ_get": "ii",
    "environ_sizes_get": "ii",
    "clock_res_get": "ii",
    "clock_time_get": "iIi",
    "fd_advise": "iIIi",
    "fd_allocate": "iII",
    "fd_close": "i",
    "fd_datasync": "i",
    "fd_fdstat_get": "ii",
    "fd_fdstat_set_flags": "ii",
    "fd_fdstat_set_rights": "iII",
    "fd_filestat_get": "ii",
    "fd_filestat_set_size": "iI",
    "fd_filestat_set_times": "iIIi",
    "fd_pread": "iiiIi",
    "fd_prestat_get": "ii",
    "fd_prestat_dir_name": "iii",
    "fd_pwrite": "iiiIi",
    "fd_read": "iiii",
    "fd_readdir": "iiiIi",
    "fd_renumber": "ii",
    "fd_seek": "iIii",
    "fd_sync": "i",
    "fd_tell": "ii",
    "fd_write": "iiii",
    "path_create_directory": "iii",
    "path_filestat_get": "iiiii",
    "path_filestat_set_times": "iiiiIIi",
    "path_link": "iiiiiii",
    "path_open": "iiiiiIIii",
    "path_readlink": "iiiiii",
    "path_remove_directory": "iii",
    "path_rename": "iiiiii",
    "path_symlink": "iiiii",
    "path_unlink_file": "iii",
    "poll_oneoff": "iiii",
    "proc_exit": "i",
    "proc_raise": "i",
    "random_get": "ii",
    "sched_yield": "",
    "sock_accept": "iii",
    "sock_recv": "iiiiii",
    "sock_send": "iiiii",
    "sock_shutdown": "ii",
}
