"""Slurm node names -> node types, and the power saver's state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shoal.daemon.durable import LOCK_FILE, STATE_FILE, DurableStore
from shoal.daemon.slurm.names import NodeTypeMap
from shoal.daemon.slurm.state import KeptDown, PowerState, ResumeRequest, StateError, SuspendRequest
from shoal.scaler.model import CapacityType, Offering

MAPPING = {
    "cloud[1-4]": "c5.xlarge",
    "gpu": "p3.2xlarge",
    "gpubig": "p3.8xlarge",
    "cloud9": "r5.large",
    "a1,a2": "m5.large",
}


@pytest.mark.parametrize(
    ("name", "node_type"),
    [
        pytest.param("cloud1", "c5.xlarge", id="hostlist"),
        pytest.param("cloud4", "c5.xlarge", id="hostlist-end"),
        pytest.param("cloud9", "r5.large", id="exact-name"),
        pytest.param("cloud5", None, id="outside-the-hostlist"),
        pytest.param("gpu12", "p3.2xlarge", id="prefix"),
        pytest.param("gpubig3", "p3.8xlarge", id="longest-prefix-wins"),
        pytest.param("gpu", "p3.2xlarge", id="the-prefix-itself"),
        pytest.param("a2", "m5.large", id="comma-list"),
        pytest.param("b1", None, id="unknown"),
    ],
)
def test_node_type_of_a_name(name: str, node_type: str | None) -> None:
    assert NodeTypeMap.from_config(MAPPING).node_type(name) == node_type


def test_a_listed_name_wins_over_a_prefix() -> None:
    types = NodeTypeMap.from_config({"cl": "small", "cloud[1-2]": "big"})
    assert [types.node_type(n) for n in ("cloud1", "cloud3", "cl7")] == ["big", "small", "small"]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        pytest.param({"cloud[1-2]": "a", "cloud[2-3]": "b"}, "both", id="claimed-twice"),
        pytest.param({"cloud[1-": "a"}, "not a Slurm hostlist", id="malformed"),
    ],
)
def test_bad_mappings_are_refused(mapping: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NodeTypeMap.from_config(mapping)


async def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    folder = tmp_path / "sub"
    state = PowerState(DurableStore.open(folder))
    offering = Offering("c5.xlarge", "us-west-2a", CapacityType.ON_DEMAND)
    state.requests["cloud1"] = ResumeRequest("slurm-1", 100.0, ("7", "8_1"), offering, "tok")
    state.suspends["cloud3"] = SuspendRequest("resume_fail", 150.0)
    state.kept_down["cloud2"] = KeptDown(200.0, "shoal: no capacity", marked=True)
    await state.save()
    again = PowerState(DurableStore.open(folder))
    assert again.requests == state.requests
    assert again.suspends == state.suspends
    assert again.kept_down == state.kept_down
    assert json.loads((folder / STATE_FILE).read_text())["version"] == 1
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE, STATE_FILE]  # no temporary


def test_a_state_file_from_before_the_rename_keeps_its_nodes_down(tmp_path: Path) -> None:
    """Issue 22 item 5: the section's ``holds`` became ``kept_down``. A file an older daemon
    wrote still has ``holds``: its nodes stay DOWN until released, and the next write uses the
    new key."""
    folder = tmp_path / "old"
    folder.mkdir()
    old = {"until": 200.0, "reason": "shoal: no capacity", "marked": True}
    older = {"version": 1, "slurm": {"holds": {"cloud2": old}}}
    (folder / STATE_FILE).write_text(json.dumps(older))
    state = PowerState(DurableStore.open(folder))
    assert state.kept_down == {"cloud2": KeptDown(200.0, "shoal: no capacity", marked=True)}
    assert state.to_json()["kept_down"] == {"cloud2": old} and "holds" not in state.to_json()


def test_a_missing_state_file_is_an_empty_state(tmp_path: Path) -> None:
    state = PowerState(DurableStore.open(tmp_path / "none"))
    assert state.requests == {} and state.kept_down == {} and state.suspends == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{not json", "cannot read", id="not-json"),
        pytest.param('{"version": 2}', "version 2", id="other-version"),
        pytest.param(
            '{"version": 1, "slurm": {"requests": {"a": {}}}}', "malformed", id="no-request-id"
        ),
        pytest.param(
            '{"version": 1, "slurm": {"kept_down": {"a": {"until": "x"}}}}',
            "malformed",
            id="bad-kept-down",
        ),
        pytest.param(
            '{"version": 1, "slurm": {"holds": {"a": {"until": "x"}}}}', "malformed", id="bad-hold"
        ),
        pytest.param(
            '{"version": 1, "slurm": {"suspends": {"a": {}}}}', "malformed", id="bad-suspend"
        ),
    ],
)
def test_a_damaged_state_file_is_an_error_not_an_empty_state(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / STATE_FILE).write_text(text)
    with pytest.raises(StateError, match=message):
        PowerState(DurableStore.open(tmp_path))


async def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    state = PowerState(DurableStore.open(tmp_path))
    state.requests["cloud1"] = ResumeRequest("slurm-1", 1.0)
    await state.save()
    state.requests["cloud2"] = ResumeRequest("slurm-2", 2.0, (object(),))  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # json.dump fails half-way through the temporary file
        await state.save()
    assert set(PowerState(DurableStore.open(tmp_path)).requests) == {"cloud1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, STATE_FILE]
