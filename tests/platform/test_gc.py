"""QUOTEAPI_GC_GEN0_THRESHOLD: the worker freezes what start-up loaded and collects the youngest
generation less often; 0 leaves Python's collector as it is. `serve` starts with the collector
off; it is on again once start-up is done."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from quoteapi.app import tune_garbage_collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.enable()


@pytest.mark.usefixtures("restored_gc")
def test_a_threshold_freezes_start_up_and_sets_generation_0() -> None:
    older = gc.get_threshold()[1:]
    tune_garbage_collector(50_000)
    assert gc.get_threshold() == (50_000, *older)
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored_gc")
def test_zero_leaves_the_collector_alone() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    tune_garbage_collector(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


@pytest.mark.parametrize("threshold", [50_000, 0])
@pytest.mark.usefixtures("restored_gc")
def test_the_collector_that_serve_turns_off_for_its_start_up_is_on_again(threshold: int) -> None:
    gc.disable()
    tune_garbage_collector(threshold)
    assert gc.isenabled()
