"""Bounded streams between the event loop and the worker threads that read and
write Tarbox (tar export and import, a run's output events, file downloads): at most ``depth``
chunks (of about ``CHUNK`` bytes, for byte streams) wait in a pipe, so a 1 GiB
transfer holds a few MiB of memory.

A side that goes away (the client disconnects, the worker fails) breaks the pipe:
the other side's next call raises :class:`BrokenPipeError` instead of waiting forever.
"""

from __future__ import annotations

import io
import queue
import threading

CHUNK = 1 << 20
_END = b""


def file_chunks(f, start: int, end: int):
    """Bytes ``start`` to ``end`` of an open file in ``CHUNK``-sized pieces (fewer if it
    shrank meanwhile), closing it when done or abandoned: a streamed download's body."""
    try:
        f.seek(start)
        left = end - start
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        f.close()


class Pipe:
    def __init__(self, depth: int = 4) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._broken = threading.Event()

    def put(self, data) -> None:
        """Hand ``data`` to the reader (``b""`` ends the stream); waits while the pipe is full."""
        while True:
            if self._broken.is_set():
                raise BrokenPipeError("the reading side went away")
            try:
                self._q.put(data, timeout=0.2)
                return
            except queue.Full:
                continue

    def get(self):
        """The next chunk, ``b""`` at the end; waits while the pipe is empty."""
        while True:
            if self._broken.is_set() and self._q.empty():
                raise BrokenPipeError("the writing side went away")
            try:
                return self._q.get(timeout=0.2)
            except queue.Empty:
                continue

    def close(self) -> None:
        """The writer is done."""
        self.put(_END)

    def break_(self) -> None:
        """Either side gives up; the other side's next call fails."""
        self._broken.set()

    def writer(self) -> io.RawIOBase:
        return _Writer(self)

    def reader(self) -> io.RawIOBase:
        return _Reader(self)


class _Writer(io.RawIOBase):
    """A file object whose writes go into the pipe, gathered into ``CHUNK``-sized pieces."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe, self._buf = pipe, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._buf += b
        if len(self._buf) >= CHUNK:
            self._pipe.put(bytes(self._buf))
            self._buf.clear()
        return len(b)

    def flush(self) -> None:
        if self._buf:
            self._pipe.put(bytes(self._buf))
            self._buf.clear()


class _Reader(io.RawIOBase):
    """A file object reading what was put into the pipe (not seekable: tar reads it as a stream)."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe, self._rest, self._eof = pipe, b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._rest and not self._eof:
            self._rest = self._pipe.get()
            self._eof = not self._rest
        n = min(len(b), len(self._rest))
        b[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n
