"""Tenant-scoped POSIX-like filesystem over PostgreSQL."""

from tarbox.fs.file import TarboxFile
from tarbox.fs.filesystem import Filesystem
from tarbox.fs.types import Change, ChangeKind, DirEntry, FileType, Layer, Stat, Usage

__all__ = ["Change", "ChangeKind", "Layer", "DirEntry", "FileType", "Filesystem", "Stat", "TarboxFile", "Usage"]
