"""write_json_atomic: the state files that must survive a crash."""

from __future__ import annotations

import json
from pathlib import Path

from shoal.runtime.files import write_json_atomic


def test_a_state_file_is_one_line_of_json_as_the_c_encoder_writes_it(tmp_path: Path) -> None:
    """An indent would take json's pure-Python encoder, four times slower; the state file is
    rewritten on every change of a Slurm daemon's state."""
    data = {"version": 1, "slurm": {"b": [1, 2], "a": {"x": None}}, "ledger": []}
    path = tmp_path / "new" / "state.json"  # the folder is made
    write_json_atomic(path, data, sort_keys=True)
    text = path.read_text()
    assert json.loads(text) == data
    assert text == json.dumps(data, sort_keys=True)
    assert "\n" not in text
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary file left
