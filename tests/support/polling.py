"""Wait for a condition by polling it, never by sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

INTERVAL_S = 0.02


def wait_until(
    condition: Callable[[], object], *, within: float, what: str, interval: float = INTERVAL_S
) -> float:
    """Call `condition` until it returns something true; how long that took. TimeoutError
    naming `what` if it does not within `within` seconds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise TimeoutError(f"not within {within} s: {what}")
        time.sleep(interval)  # poll interval, not a guess at how long it takes
    return time.monotonic() - started


async def until(
    condition: Callable[[], object], *, within: float, what: str, interval: float = INTERVAL_S
) -> float:
    """`wait_until` for the event loop: `condition` may be a function or a coroutine function."""
    started = time.monotonic()
    while not await _call(condition):
        if time.monotonic() - started > within:
            raise TimeoutError(f"not within {within} s: {what}")
        await asyncio.sleep(interval)  # poll interval
    return time.monotonic() - started


async def _call(condition: Callable[[], object]) -> object:
    result = condition()
    return await result if inspect.isawaitable(result) else result
