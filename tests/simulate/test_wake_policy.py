"""The replay asks the controller when its timers fall due (``Controller.next_deadline``, the
daemon loop's one wake policy) instead of listing them itself: a new timer is a pass the
replay runs, with or without skipping, at the time the daemon's loop would wake for it."""

from __future__ import annotations

from typing import Any

import pytest
from shoal.daemon.loop import WAKE_SLACK, Controller
from shoal.daemon.simulate import engine
from shoal.daemon.simulate.engine import EPOCH
from test_engine import config, run, trace

NEW_TIMER = 5000.5  # seconds into the replay, off the 30 s timer grid


@pytest.mark.parametrize("skip", [True, False])
def test_a_new_timer_wakes_a_pass_in_the_replay(monkeypatch: Any, skip: bool) -> None:
    passes: list[float] = []
    build = engine.build_controller

    async def with_a_new_timer(*args: Any, **kwargs: Any) -> Controller:
        controller = await build(*args, **kwargs)
        due = EPOCH + NEW_TIMER
        controller.deadline_sources.append(lambda now: due if due > now else None)
        controller.on_pass.append(lambda record: passes.append(record.started_at - EPOCH))
        return controller

    monkeypatch.setattr(engine, "build_controller", with_a_new_timer)
    r = run(trace((0, 600, 7200, 1, 1)), config(), skip=skip)  # quiet from about 1000 s
    assert passes[-1] == pytest.approx(NEW_TIMER + WAKE_SLACK, abs=1e-6)
    assert r.stats.end == pytest.approx(NEW_TIMER + WAKE_SLACK, abs=1e-6)
    if skip:
        assert max(p for p in passes if p < NEW_TIMER) < 1100  # the quiet hour was skipped
