"""The pool's admission: first come, first served, a deadline for waiters, no slot lost."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from quoteapi.database.engine import FifoSlots


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
