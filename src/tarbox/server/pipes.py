"""Bounded streams between the event loop and the worker threads that read and
write Tarbox (tar export, a run's output events, file downloads): at most ``depth``
chunks (of about ``CHUNK`` bytes, for byte streams) wait in a pipe, so a 1 GiB
transfer holds a few MiB of memory.

A side that goes away (the client disconnects, the worker fails) breaks the pipe:
the other side's next call raises :class:`BrokenPipeError` instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import collections
import io
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
    """A bounded queue between one worker thread and the event loop. The thread side
    (:meth:`put`, :meth:`get`) blocks; the event loop side (:meth:`aput`, :meth:`aget`)
    awaits, holding no thread, however slow the client at the other end."""

    def __init__(self, depth: int = 4) -> None:
        self._items: collections.deque = collections.deque()
        self._depth = depth
        self._cv = threading.Condition()
        self._broken = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def _changed(self) -> None:
        """Wake both sides (with ``_cv`` held)."""
        self._cv.notify_all()
        for loop, fut in self._waiters:
            loop.call_soon_threadsafe(_wake, fut)
        self._waiters.clear()

    def put(self, data) -> None:
        """Hand ``data`` to the reader (``b""`` ends the stream); waits while the pipe is full."""
        with self._cv:
            while not self._broken and len(self._items) >= self._depth:
                self._cv.wait()
            if self._broken:
                raise BrokenPipeError("the reading side went away")
            self._items.append(data)
            self._changed()

    def get(self):
        """The next chunk, ``b""`` at the end; waits while the pipe is empty."""
        with self._cv:
            while not self._items and not self._broken:
                self._cv.wait()
            if not self._items:
                raise BrokenPipeError("the writing side went away")
            item = self._items.popleft()
            self._changed()
            return item

    async def aput(self, data) -> None:
        """:meth:`put` for the event loop."""
        while True:
            with self._cv:
                if self._broken:
                    raise BrokenPipeError("the reading side went away")
                if len(self._items) < self._depth:
                    self._items.append(data)
                    self._changed()
                    return
                fut = self._wait_here()
            await fut

    async def aget(self):
        """:meth:`get` for the event loop."""
        while True:
            with self._cv:
                if self._items:
                    item = self._items.popleft()
                    self._changed()
                    return item
                if self._broken:
                    raise BrokenPipeError("the writing side went away")
                fut = self._wait_here()
            await fut

    def _wait_here(self) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append((loop, fut))
        return fut

    def close(self) -> None:
        """The writer is done."""
        self.put(_END)

    def break_(self) -> None:
        """Either side gives up; the other side's next call fails."""
        with self._cv:
            self._broken = True
            self._changed()

    def writer(self) -> io.RawIOBase:
        return _Writer(self)

    def reader(self) -> io.RawIOBase:
        return _Reader(self)


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


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
