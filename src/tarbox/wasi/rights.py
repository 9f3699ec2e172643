"""The Preview 1 rights model: which rights a descriptor has, and which a call uses.

Rights are reported as opened: what the guest asked for, within what the directory
passes on (``inheriting``), and within what such a descriptor can have (files never
have ``path_*`` rights). ``fd_fdstat_set_rights`` may only narrow them; once a guest
has narrowed them (``held``, on a descriptor or an ancestor), each call checks the
right it uses and answers NOTCAPABLE without it. Access itself comes from
``FD_READ``/``FD_WRITE`` alone, as wasmtime reads them. The descriptor table that
holds these numbers is ``preview1``'s; this module owns only the numbers.
"""

from __future__ import annotations

from tarbox.wasi.types import DescriptorFlags

R_FD_DATASYNC, R_FD_READ, R_FD_SEEK, R_FD_WRITE = 1 << 0, 1 << 1, 1 << 2, 1 << 6
R_FD_ALLOCATE, R_FD_READDIR, R_FD_FILESTAT_SET_SIZE = 1 << 8, 1 << 14, 1 << 22
R_FD_TELL = 1 << 5
R_FD_FDSTAT_SET_FLAGS, R_FD_SYNC, R_FD_ADVISE = 1 << 3, 1 << 4, 1 << 7
R_PATH_CREATE_DIRECTORY, R_PATH_CREATE_FILE, R_PATH_LINK_SOURCE, R_PATH_LINK_TARGET = 1 << 9, 1 << 10, 1 << 11, 1 << 12
R_PATH_OPEN, R_PATH_READLINK, R_PATH_RENAME_SOURCE, R_PATH_RENAME_TARGET = 1 << 13, 1 << 15, 1 << 16, 1 << 17
R_PATH_FILESTAT_GET, R_PATH_FILESTAT_SET_SIZE, R_PATH_FILESTAT_SET_TIMES = 1 << 18, 1 << 19, 1 << 20
R_FD_FILESTAT_GET, R_FD_FILESTAT_SET_TIMES = 1 << 21, 1 << 23
R_PATH_SYMLINK, R_PATH_REMOVE_DIRECTORY, R_PATH_UNLINK_FILE = 1 << 24, 1 << 25, 1 << 26
ALL_RIGHTS = (1 << 30) - 1
FILE_RIGHTS = ALL_RIGHTS & ~(
    (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 16)
    | (1 << 17)
    | (1 << 18)
    | (1 << 19)
    | (1 << 20)
    | (1 << 24)
    | (1 << 25)
    | (1 << 26)
    | (1 << 28)
    | (1 << 29)
)
DIR_RIGHTS = ALL_RIGHTS & ~(
    R_FD_READ
    | R_FD_WRITE
    | R_FD_SEEK
    | R_FD_TELL
    | R_FD_ALLOCATE
    | R_FD_FILESTAT_SET_SIZE
    | (1 << 27)
    | (1 << 28)
    | (1 << 29)
)
STDIO_RIGHTS = R_FD_READ | R_FD_WRITE | (1 << 27)

O_CREAT, O_TRUNC = 1, 8  # the oflags whose use a directory's rights govern

# the right each call uses on a descriptor argument: (argument index, right)
RIGHT_NEEDED = {
    "fd_advise": (0, R_FD_ADVISE),
    "fd_allocate": (0, R_FD_ALLOCATE),
    "fd_datasync": (0, R_FD_DATASYNC),
    "fd_sync": (0, R_FD_SYNC),
    "fd_fdstat_set_flags": (0, R_FD_FDSTAT_SET_FLAGS),
    "fd_filestat_get": (0, R_FD_FILESTAT_GET),
    "fd_filestat_set_size": (0, R_FD_FILESTAT_SET_SIZE),
    "fd_filestat_set_times": (0, R_FD_FILESTAT_SET_TIMES),
    "fd_read": (0, R_FD_READ),
    "fd_pread": (0, R_FD_READ),
    "fd_write": (0, R_FD_WRITE),
    "fd_pwrite": (0, R_FD_WRITE),
    "fd_readdir": (0, R_FD_READDIR),
    "fd_seek": (0, R_FD_SEEK),
    "fd_tell": (0, R_FD_TELL),
    "path_create_directory": (0, R_PATH_CREATE_DIRECTORY),
    "path_filestat_get": (0, R_PATH_FILESTAT_GET),
    "path_filestat_set_times": (0, R_PATH_FILESTAT_SET_TIMES),
    "path_link": (0, R_PATH_LINK_SOURCE),
    "path_open": (0, R_PATH_OPEN),
    "path_readlink": (0, R_PATH_READLINK),
    "path_remove_directory": (0, R_PATH_REMOVE_DIRECTORY),
    "path_rename": (0, R_PATH_RENAME_SOURCE),
    "path_symlink": (2, R_PATH_SYMLINK),
    "path_unlink_file": (0, R_PATH_UNLINK_FILE),
}


def may_open(dir_rights: int, oflags: int) -> bool:
    """Whether a directory with ``dir_rights`` allows path_open with ``oflags``."""
    if oflags & O_CREAT and not dir_rights & R_PATH_CREATE_FILE:
        return False
    return not (oflags & O_TRUNC and not dir_rights & R_PATH_FILESTAT_SET_SIZE)


def open_access(base: int) -> DescriptorFlags:
    """The access ``base`` rights ask for. Only FD_READ and FD_WRITE count: the other
    rights describe a directory too, and Rust's std and cap-std reopen a directory with
    the rights fd_fdstat_get reported for it."""
    flags = DescriptorFlags(0)
    if base & R_FD_READ:
        flags |= DescriptorFlags.READ
    if base & R_FD_WRITE:
        flags |= DescriptorFlags.WRITE
    return flags


def opened_rights(base: int, inheriting: int, dir_inheriting: int, is_dir: bool) -> tuple[int, int]:
    """The (rights, inheriting) of a descriptor path_open made: what it asked for,
    within what the directory passes on and what such a descriptor can have."""
    rights = base & dir_inheriting & (DIR_RIGHTS if is_dir else FILE_RIGHTS)
    return rights, (inheriting & dir_inheriting) if is_dir else 0
