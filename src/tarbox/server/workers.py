"""The threads that do the server's blocking work, and how much of it each tenant and
token may hold at once, so that no tenant's work can starve another's.

Three kinds of work, kept apart:

* **calls**: the filesystem operations of ordinary requests (FastAPI runs them in
  anyio's thread pool). :class:`TenantShare` shares them fairly (:class:`FairShares`):
  a tenant alone may have ``calls_per_tenant`` requests in progress, and each of
  several active tenants ``fair_calls``; more wait on the event loop (no thread
  held) up to ``queue_wait`` seconds, then get 429.
* **runs**: sandbox runs, in threads of their own at the lowest CPU priority (nice
  19: interactive requests win the CPU), ``runs_per_token`` each (beyond that, 429
  at once) and ``runs_per_tenant`` (more wait in line); of those, a tenant alone may execute
  ``max_runs`` at once and each of several active tenants half as many; more wait
  in line on the event loop.
* **streams**: imports and uploads being applied, exports being produced, in
  threads of their own (nice 10), ``streams_per_tenant`` each (more wait, then
  429), ``max_streams`` at once.

Nothing here waits for a client: bodies are received on the event loop before any
thread starts (``bodies``), and pipes to slow readers are awaited there (``pipes``).
A slot is given back when its work ends, not when its client leaves.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from tarbox.server import errors
from tarbox.server.errors import ApiError

T = TypeVar("T")


# the release of the request's call slot (TenantShare): a request that goes on to wait
# for a run (MCP's run tools) gives its slot back first, runs having caps of their own
CALL_SLOT: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("tarbox_call_slot", default=None)


def is_stream(method: str, path: str) -> bool:
    """Is this a route whose work is capped by :class:`Workers` (a run, an import, an
    export, an upload, a download), not by a call slot?"""
    if path.startswith(("/v1/import", "/v1/export")):
        return True
    if path.startswith("/v1/files/"):
        return method in ("GET", "PUT")
    if path == "/v1/sessions" or path.endswith("/turns"):  # opening a session, a turn: runs
        return method == "POST" and path.startswith("/v1/sessions")
    return path == "/v1/runs" and method == "POST"


def _niced(level: int) -> Callable[[], None]:
    def init() -> None:
        with contextlib.suppress(OSError, AttributeError):  # per-thread nice: Linux
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), level)

    return init


class _Counts:
    """Work in progress per key, with a cap (the event loop's thread only)."""

    def __init__(self) -> None:
        self._n: dict[object, int] = {}

    def take(self, key: object, cap: int, what: str, code: str) -> None:
        n = self._n.get(key, 0)
        if n >= cap:
            raise ApiError(429, code, f"{what}: {n} already in progress (at most {cap}); retry later")
        self._n[key] = n + 1

    def give(self, key: object) -> None:
        n = self._n[key] - 1
        if n:
            self._n[key] = n
        else:
            del self._n[key]


class Workers:
    """The server's run and stream threads, and the caps on them (one per app)."""

    def __init__(self, limits) -> None:
        self.limits = limits
        self._runs = ThreadPoolExecutor(limits.max_runs, "tarbox-run", initializer=_niced(19))
        self._streams = ThreadPoolExecutor(limits.max_streams, "tarbox-stream", initializer=_niced(10))
        self._run_slots: asyncio.Semaphore | None = None
        self._runs_by_token = _Counts()
        self._runs_by_tenant = Shares(limits.runs_per_tenant, limits.queue_wait)
        self.activity = Activity()  # which tenants are active, for every fair share of the app
        # runs executing per tenant: all of the server's alone, half while others are active
        self._running = FairShares(limits.max_runs, max(1, limits.max_runs // 2), limits.queue_wait, self.activity)
        self._streams_by_tenant = Shares(limits.streams_per_tenant, limits.queue_wait)

    async def admit_run(self, tenant: uuid.UUID, token: uuid.UUID) -> Callable[[], None]:
        """Take a run slot for this tenant and token: 429 at once when the token has
        ``runs_per_token``; then wait (up to ``queue_wait`` each, then 429) for one of the
        tenant's ``runs_per_tenant``, for its fair share of runs executing
        (:class:`FairShares`) and for one of the server's ``max_runs``. Returns its
        release, to be called on the event loop."""
        self._runs_by_token.take(token, self.limits.runs_per_token, "runs of this token", "TOO_MANY_RUNS")
        try:
            release_tenant = await self._runs_by_tenant.take(tenant, "runs", "TOO_MANY_RUNS")
        except BaseException:
            self._runs_by_token.give(token)
            raise

        def release_counts() -> None:
            self._runs_by_token.give(token)
            release_tenant()

        try:
            release_share = await self._running.take(tenant, "runs", "TOO_MANY_RUNS")
        except BaseException:
            release_counts()
            raise
        if self._run_slots is None:
            self._run_slots = asyncio.Semaphore(self.limits.max_runs)
        try:
            with anyio.fail_after(self.limits.queue_wait):
                await self._run_slots.acquire()
        except BaseException as exc:
            release_share()
            release_counts()
            if isinstance(exc, TimeoutError):
                raise ApiError(429, "BUSY", "every run slot of the server is taken; retry later") from None
            raise
        slots = self._run_slots

        def release() -> None:
            slots.release()
            release_share()
            release_counts()

        return release

    async def run(self, tenant: uuid.UUID, token: uuid.UUID, fn: Callable[[], T]) -> T:
        """``fn`` (a sandbox run) in a run thread, once this tenant and token may start one.
        The slot is given back when the run ends, even if the client left before."""
        release = await self.admit_run(tenant, token)
        return await _in_pool(self._runs, fn, release)

    def start_run(self, fn: Callable[[], None], release: Callable[[], None]) -> None:
        """``fn`` in a run thread, not waited for; ``release`` (of :meth:`admit_run`) runs
        on the event loop when it ends."""
        _when_done(self._runs.submit(fn), release)

    async def admit_stream(self, tenant: uuid.UUID) -> Callable[[], None]:
        """Take one of the tenant's stream slots, waiting up to ``queue_wait`` (then 429);
        returns its release."""
        return await self._streams_by_tenant.take(tenant, "streams", "TOO_MANY_STREAMS")

    async def stream(self, fn: Callable[[], T], *after: Callable[[], None]) -> T:
        """``fn`` (applying an import or upload) in a stream thread; each of ``after`` (a
        slot's release, closing the spool ``fn`` reads) runs when ``fn`` has ended, even
        if the client left before."""
        return await _in_pool(self._streams, fn, *after)

    def start_stream(self, fn: Callable[[], None], *after: Callable[[], None]) -> None:
        """``fn`` (producing an export) in a stream thread, not waited for."""
        _when_done(self._streams.submit(fn), *after)

    def close(self) -> None:
        self._runs.shutdown(wait=True)
        self._streams.shutdown(wait=True)


def _when_done(future, *after: Callable[[], None]) -> None:
    """Run each of ``after`` on the event loop once ``future`` (of a pool) is done."""
    loop = asyncio.get_running_loop()

    def done(_) -> None:
        for fn in after:
            loop.call_soon_threadsafe(fn)

    future.add_done_callback(done)


async def _in_pool(pool: ThreadPoolExecutor, fn: Callable[[], T], *after: Callable[[], None]) -> T:
    """``fn``'s result from ``pool``. If the request is cancelled (its client left), the
    work still ends as it would have (a run is recorded, an import commits or not), and
    what it holds is given back only then."""
    try:
        future = pool.submit(fn)
    except BaseException:
        for cleanup in after:
            cleanup()
        raise
    _when_done(future, *after)
    return await asyncio.shield(asyncio.wrap_future(future))


class Shares:
    """At most ``cap`` holders per key at once; more wait on the event loop up to
    ``wait`` seconds, then get 429. Keys nobody holds or waits for are forgotten."""

    def __init__(self, cap: int, wait: float) -> None:
        self.cap, self.wait = cap, wait
        self._slots: dict[object, asyncio.Semaphore] = {}
        self._users: dict[object, int] = {}

    def held(self) -> int:
        """Keys with work in progress or waiting (each is forgotten once it has none)."""
        return len(self._users)

    async def take(self, key: object, what: str, code: str) -> Callable[[], None]:
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.cap)
        self._users[key] = self._users.get(key, 0) + 1

        def leave() -> None:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._slots[key]

        try:
            with anyio.fail_after(self.wait):
                await slots.acquire()
        except BaseException as exc:
            leave()
            if isinstance(exc, TimeoutError):
                raise ApiError(
                    429, code, f"this tenant has {self.cap} {what} in progress and others waiting; retry later"
                ) from None
            raise
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                slots.release()
                leave()

        return release


class Activity:
    """Which tenants are active on the server: with a request or run in progress or
    waiting, or one that ended less than ``ACTIVE`` seconds ago (a client sending one
    request after another is active between them). Shared by every :class:`FairShares`
    of an app, so that a tenant's runs count as activity for its calls' share too."""

    ACTIVE = 0.5

    def __init__(self) -> None:
        self._live: dict[object, int] = {}
        self._seen: dict[object, float] = {}

    def enter(self, key: object) -> None:
        self._live[key] = self._live.get(key, 0) + 1

    def leave(self, key: object) -> None:
        self._live[key] -= 1
        if not self._live[key]:
            del self._live[key]
        now = time.monotonic()
        self._seen[key] = now
        if len(self._seen) > 1024:  # forget tenants long gone
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.ACTIVE}

    def count(self, now: float) -> int:
        recent = {k for k, t in self._seen.items() if now - t < self.ACTIVE}
        return len(recent | self._live.keys())


class FairShares:
    """Work in progress per tenant, shared fairly: a tenant alone on the server may
    have ``cap`` at once; while other tenants are active (:class:`Activity`), each may
    have only ``contended``. Python runs one thread at a time, so a tenant with eight
    requests in progress against another's one would get eight times the server;
    this way each active tenant gets about an equal part, and a tenant alone gets all
    of it. A tenant's waiters stand in line on the event loop, first come first
    served, up to ``wait`` seconds, then get 429; only the first of the line is woken
    when one of the tenant's slots is given back (waking them all would cost the loop
    as much as a flood's requests themselves).

    ``paced``: a tenant that has more waiting when one of its slots is given back,
    while ``n`` tenants are active, pauses ``n - 1`` times as long as that work took
    (at most ``Activity.ACTIVE``) before its next starts. A count of slots is not a
    share of the event loop: a flood of cheap requests, one in progress at a time,
    still had the loop nearly all the time; paced, it has at most its ``1/n``."""

    def __init__(
        self, cap: int, contended: int, wait: float, activity: Activity | None = None, *, paced: bool = False
    ) -> None:
        self.cap, self.contended, self.wait = cap, max(1, min(contended, cap)), wait
        self.activity = activity or Activity()
        self.paced = paced
        self._in: dict[object, int] = {}
        self._lines: dict[object, collections.deque[_InLine]] = {}
        self._not_before: dict[object, float] = {}  # paced tenants: when the next may start

    def cap_of(self, now: float) -> int:
        return self.cap if self.activity.count(now) <= 1 else self.contended

    def held(self) -> int:
        """Work in progress, all tenants together."""
        return sum(self._in.values())

    async def take(self, key: object, what: str, code: str) -> Callable[[], None]:
        self.activity.enter(key)
        try:
            await self._wait_in_line(key, what, code)
        except BaseException:
            self.activity.leave(key)
            raise
        done = False
        started = time.monotonic()

        def release() -> None:
            nonlocal done
            if done:
                return
            done = True
            now = time.monotonic()
            active = self.activity.count(now)
            if self.paced and key in self._lines and active > 1:
                # its share of time, as each of the others could have had as much
                self._not_before[key] = now + min((active - 1) * (now - started), Activity.ACTIVE)
            self._in[key] -= 1
            if not self._in[key]:
                del self._in[key]
            self.activity.leave(key)
            self._ring(key)

        return release

    async def _wait_in_line(self, key: object, what: str, code: str) -> None:
        """Return holding one of ``key``'s slots, once it is first in line and has room."""
        deadline = time.monotonic() + self.wait
        line = self._lines.setdefault(key, collections.deque())
        me = _InLine()
        line.append(me)
        try:
            while True:
                now = time.monotonic()
                pause = self._not_before.get(key, 0.0) - now
                if line[0] is me and self._in.get(key, 0) < self.cap_of(now) and pause <= 0:
                    break
                left = deadline - now
                if left <= 0:
                    raise ApiError(
                        429, code, f"this tenant has its share of {what} in progress and more waiting; retry later"
                    )
                me.bell = asyncio.get_running_loop().create_future()
                # looked at again every ACTIVE seconds: a share grows back when the
                # other tenants fall idle, which no one announces
                nap = min(left, Activity.ACTIVE, pause) if pause > 0 else min(left, Activity.ACTIVE)
                await asyncio.wait((me.bell,), timeout=nap)
            self._not_before.pop(key, None)
            self._in[key] = self._in.get(key, 0) + 1
        finally:
            line.remove(me)
            if not line:
                del self._lines[key]
                self._not_before.pop(key, None)
            self._ring(key)  # the next in line may have room too

    def _ring(self, key: object) -> None:
        """Wake the first of ``key``'s line (it looks whether it may go)."""
        line = self._lines.get(key)
        if line:
            bell = line[0].bell
            if bell is not None and not bell.done():
                bell.set_result(None)


class _InLine:
    """One waiter of :class:`FairShares`: the future it sleeps on."""

    __slots__ = ("bell",)

    def __init__(self) -> None:
        self.bell: asyncio.Future[None] | None = None


class TenantShare:
    """ASGI middleware: a tenant's requests in progress, shared fairly with the other
    tenants' (:class:`FairShares`: ``calls_per_tenant`` alone, ``fair_calls`` while
    others are active; streams, see :func:`is_stream`, are capped by :class:`Workers`)."""

    def __init__(self, app: ASGIApp, limits, scope_key: str, activity: Activity) -> None:
        self.app, self.key = app, scope_key
        self._shares = FairShares(limits.calls_per_tenant, limits.fair_calls, limits.queue_wait, activity, paced=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = scope.get(self.key) if scope["type"] == "http" else None
        tenant = getattr(token, "tenant_id", None)
        if tenant is None or is_stream(scope.get("method", ""), scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        try:
            release = await self._shares.take(tenant, "requests", "TOO_MANY_REQUESTS")
        except ApiError as busy:
            await errors.response(busy)(scope, receive, send)
            return
        held = CALL_SLOT.set(release)
        try:
            await self.app(scope, receive, send)
        finally:
            CALL_SLOT.reset(held)
            release()
