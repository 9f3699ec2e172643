"""Tenant-scoped POSIX-like filesystem over PostgreSQL."""

from tarbox.fs.file import TarboxFile
from tarbox.fs.filesystem import Filesystem
from tarbox.fs.types import DirEntry, FileType, Stat, Usage

__all__ = ["DirEntry", "FileType", "Filesystem", "Stat", "TarboxFile", "Usage"]
