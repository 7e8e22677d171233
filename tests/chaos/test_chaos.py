"""The chaos harness in ``make test``: 200 seeds of six simulated hours with random faults, and
not one violation of shoal's invariants (``tests/chaos/harness.py`` lists them). A failure
prints each violating seed with its violations and the tail of its event log; replay one with
``bench/chaos.py --seed S --verbose``."""

from __future__ import annotations

import os

from chaos.harness import KINDS, run_seed, run_seeds

SEEDS = int(os.environ.get("SHOAL_CHAOS_SEEDS", "200"))
WORKERS = 2  # this machine's cores


def test_every_invariant_holds_over_the_seeds() -> None:
    failing = [r for r in run_seeds(range(SEEDS), KINDS, workers=WORKERS) if r.violations]
    summary = "\n\n".join(r.report(tail=25) for r in failing[:3])
    counts: dict[str, int] = {}
    for r in failing:
        for v in r.violations:
            counts[v.invariant] = counts.get(v.invariant, 0) + 1
    assert not failing, (
        f"{len(failing)} of {SEEDS} seeds violate an invariant {counts}; seeds "
        f"{[r.seed for r in failing][:30]}\n\n{summary}"
    )


def test_a_seed_replays_exactly() -> None:
    """Everything random comes from the seed (cloud, faults, crashes, retry jitter), so the
    event log of a seed is the same run after run: a reported seed can be replayed."""
    first = run_seed(5)
    again = run_seed(5)
    assert first.log == again.log
    assert first.passes > 100 and first.jobs > 0
    assert run_seed(6).log != first.log
