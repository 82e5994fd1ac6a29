"""Admission to the database pool: first come, first served, each waiter for a bounded time.
SQLAlchemy's pool hands a freed connection to whichever task asks next: a waiter could be
overtaken until it timed out (a p99 of seconds)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from sqlalchemy.exc import TimeoutError as PoolTimeout


class FifoSlots:
    """A semaphore that admits strictly first come, first served (a released slot passes
    straight to the longest waiter) and gives up on a waiter after `wait` seconds (PoolTimeout).
    Only a request that has to queue arms a timer. `observe` is told each acquisition's wait."""

    def __init__(
        self, size: int, wait: float, observe: Callable[[float], None] | None = None
    ) -> None:
        self._free = size
        self._wait = wait
        self._observe = observe
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self._free:  # a slot is free only while nobody queues (release hands it over)
            self._free -= 1
            if self._observe is not None:
                self._observe(0.0)
            return
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiters.append(turn)
        queued_at = loop.time()
        timer = loop.call_later(self._wait, _give_up, turn, self._wait)
        try:
            await turn
        except BaseException:
            # A waiter that gave up or was cancelled stays queued, done: `release` skips it.
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.release()  # handed a slot just as it was cancelled: pass the slot on
            raise
        finally:
            timer.cancel()
            if self._observe is not None:
                self._observe(loop.time() - queued_at)

    def release(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


def _give_up(turn: asyncio.Future[None], wait: float) -> None:
    if not turn.done():
        turn.set_exception(PoolTimeout(f"no database connection free within {wait} s"))
