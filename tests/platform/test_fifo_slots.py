"""The pool's admission: first come, first served, a deadline for waiters, no slot lost, and a
slot handed to a waiter is its for good, even when its deadline passes before the event loop
gets to run it (which `asyncio.timeout` around an `asyncio.Semaphore` does not give)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from quoteapi.database.admission import FifoSlots

WAIT_S = 0.3
RELEASED_AFTER_S = 0.01  # well within the waiter's wait


async def test_waiters_get_slots_in_arrival_order_and_newcomers_queue_behind_them() -> None:
    slots = FifoSlots(1, wait=5)
    await slots.acquire()
    admitted: list[str] = []

    async def request(name: str) -> None:
        await slots.acquire()
        admitted.append(name)
        slots.release()

    first = asyncio.create_task(request("first"))
    second = asyncio.create_task(request("second"))
    await asyncio.sleep(0)
    slots.release()
    newcomer = asyncio.create_task(request("newcomer"))  # arrives as the slot is handed over
    await asyncio.gather(first, second, newcomer)
    assert admitted == ["first", "second", "newcomer"]


async def test_a_slot_released_in_time_is_the_waiters_even_when_the_loop_runs_it_late() -> None:
    slots = FifoSlots(1, wait=WAIT_S)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)  # queued: its deadline is WAIT_S from now
    asyncio.get_running_loop().call_later(RELEASED_AFTER_S, slots.release)
    # A busy worker: the loop is blocked past both, then handles the release and the deadline
    # in one pass. The slot was released in time, so the waiter is served, not timed out.
    time.sleep(WAIT_S * 1.5)
    await asyncio.wait_for(waiter, 1)  # PoolTimeout if it lost the slot it was handed


async def test_a_waiter_gives_up_with_pool_timeout_after_the_wait() -> None:
    slots = FifoSlots(1, wait=0.05)
    await slots.acquire()
    with pytest.raises(PoolTimeout):
        await slots.acquire()
    slots.release()
    await asyncio.wait_for(slots.acquire(), 1)  # the expired waiter holds no slot


async def test_a_cancelled_waiter_leaves_its_turn_to_the_next() -> None:
    slots = FifoSlots(1, wait=5)
    await slots.acquire()
    cancelled = asyncio.create_task(slots.acquire())
    waiting = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    slots.release()
    await asyncio.wait_for(waiting, 1)
    assert cancelled.cancelled()
