"""How ``tarbox serve`` shares work between tenants (``server/workers.py``), checked
on the objects themselves: a tenant alone gets all of its cap, active tenants get an
equal share, waiters give up with 429, and nothing is held once work ends."""

from __future__ import annotations

import asyncio
import time

import pytest

from tarbox.server.errors import ApiError
from tarbox.server.workers import Activity, FairShares, Shares


def test_a_tenant_alone_gets_its_whole_cap_and_shares_it_when_another_comes():
    async def go():
        shares = FairShares(cap=4, contended=1, wait=5)
        a = [await shares.take("a", "requests", "X") for _ in range(4)]  # alone: all four at once
        got_b = asyncio.ensure_future(shares.take("b", "requests", "X"))
        await asyncio.sleep(0.01)
        assert got_b.done()  # b has none in progress: it goes first, at once
        release_b = got_b.result()
        more_a = asyncio.ensure_future(shares.take("a", "requests", "X"))
        for release in a[:3]:
            release()
        await asyncio.sleep(0.05)
        assert not more_a.done()  # b is active: a gets one at a time, and it still holds one
        a[3]()
        await asyncio.sleep(0.05)
        assert more_a.done()
        more_a.result()()
        release_b()

    asyncio.run(go())


def test_the_share_grows_back_when_the_other_tenant_falls_idle():
    async def go():
        activity = Activity()
        shares = FairShares(cap=3, contended=1, wait=5, activity=activity)
        (await shares.take("b", "requests", "X"))()  # b was here just now
        first = await shares.take("a", "requests", "X")
        t0 = time.monotonic()
        second = await shares.take("a", "requests", "X")  # waits until b counts as idle
        assert time.monotonic() - t0 >= Activity.ACTIVE * 0.8
        first()
        second()

    asyncio.run(go())


def test_waiting_too_long_is_429_and_holds_nothing():
    async def go():
        shares = FairShares(cap=1, contended=1, wait=0.2)
        held = await shares.take("a", "requests", "TOO_MANY_REQUESTS")
        with pytest.raises(ApiError) as exc:
            await shares.take("a", "requests", "TOO_MANY_REQUESTS")
        assert exc.value.status == 429 and exc.value.code == "TOO_MANY_REQUESTS"
        held()
        held()  # a second release changes nothing
        again = await asyncio.wait_for(shares.take("a", "requests", "X"), 1)
        again()
        assert shares.held() == 0

    asyncio.run(go())


def test_plain_shares_cap_each_key_and_forget_idle_ones():
    async def go():
        shares = Shares(cap=2, wait=0.2)
        one, two = await shares.take("t", "streams", "S"), await shares.take("t", "streams", "S")
        other = await shares.take("u", "streams", "S")  # another tenant is not affected
        with pytest.raises(ApiError):
            await shares.take("t", "streams", "S")
        for release in (one, two, other):
            release()
        assert shares.held() == 0

    asyncio.run(go())


def test_a_tenants_waiters_go_first_come_first_served():
    async def go():
        shares = FairShares(cap=1, contended=1, wait=5)
        held = await shares.take("a", "requests", "X")
        order: list[int] = []

        async def wait_then_note(i: int) -> None:
            release = await shares.take("a", "requests", "X")
            order.append(i)
            await asyncio.sleep(0.01)
            release()

        waiters = []
        for i in range(6):
            waiters.append(asyncio.ensure_future(wait_then_note(i)))
            await asyncio.sleep(0)  # each one in line before the next comes
        await asyncio.sleep(0.05)
        assert order == []  # the one slot is still held
        held()
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        assert order == list(range(6))
        assert shares.held() == 0 and not shares._lines  # nothing left in line

    asyncio.run(go())


def test_a_tenant_with_work_waiting_pauses_as_long_as_its_last_took_while_another_is_active():
    async def go():
        shares = FairShares(cap=4, contended=1, wait=5, paced=True)
        release_b = await shares.take("b", "requests", "X")  # b is active
        first = await shares.take("a", "requests", "X")
        second = asyncio.ensure_future(shares.take("a", "requests", "X"))  # a's backlog
        await asyncio.sleep(0.2)  # a's first takes 0.2 s
        first()
        released = time.monotonic()
        release_second = await asyncio.wait_for(second, 5)
        assert time.monotonic() - released >= 0.2 * 0.9  # a paused as long as its work took
        release_second()
        # b, with nothing waiting, is not paced: its next starts at once
        release_b()
        t0 = time.monotonic()
        (await shares.take("b", "requests", "X"))()
        assert time.monotonic() - t0 < 0.1

    asyncio.run(go())
