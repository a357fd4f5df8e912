"""The refresh state file and the run lock (`trace2skill.state`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from trace2skill.errors import LockHeld, StateError
from trace2skill.publish import RemovedRule
from trace2skill.state import RefreshState, load_state, run_lock, save_state

ROOT = Path(__file__).resolve().parent.parent
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_missing_state_is_empty(tmp_path):
    state = load_state(tmp_path / ".trace2skill")
    assert state.skills == {}
    assert state.skill("demo").version is None


def test_success_round_trips_and_only_explicit_calls_advance(tmp_path):
    state = RefreshState()
    advanced = state.with_success("demo", version="1.1.0", digests=["d1", "d2"], run_id="run-1", at=WHEN, trace_cursor="2025-01-01")
    assert state.skill("demo").last_success_at is None
    save_state(tmp_path, advanced)
    loaded = load_state(tmp_path)
    assert loaded == advanced
    skill = loaded.skill("demo")
    assert (skill.version, skill.last_run_id, skill.last_success_at) == ("1.1.0", "run-1", WHEN)
    assert skill.trace_digests == {"d1": "1.1.0", "d2": "1.1.0"}
    assert skill.new_digests(["d2", "d3", "d3", "d4"]) == ["d3", "d4"]
    again = loaded.with_success("demo", version="1.2.0", digests=["d3"], run_id="run-2", at=WHEN)
    assert again.skill("demo").trace_digests == {"d1": "1.1.0", "d2": "1.1.0", "d3": "1.2.0"}
    assert again.skill("demo").last_trace_cursor == "2025-01-01"


def test_rejections_block_reproposal_until_evidence_outnumbers(tmp_path):
    state = RefreshState().with_rejections("demo", [RemovedRule("r-1", "Use X", 3, "branch")], at=WHEN)
    state = state.with_rejections("demo", [RemovedRule("r-1", "Use X", 2, "base")])
    save_state(tmp_path, state)
    skill = load_state(tmp_path).skill("demo")
    assert skill.rejected["r-1"].support == 3 and skill.rejected["r-1"].rejected_at == WHEN


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    save_state(tmp_path, RefreshState().with_success("demo", version="1.0.0", digests=["a"], run_id="r", at=WHEN))
    save_state(tmp_path, RefreshState().with_success("demo", version="1.0.1", digests=["b"], run_id="r", at=WHEN))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert json.loads((tmp_path / "state.json").read_text())["skills"]["demo"]["version"] == "1.0.1"


def test_damaged_state_file_is_a_state_error(tmp_path):
    (tmp_path / "state.json").write_text('{"format": 1, "skills": {"demo": {"version": 3, "bogus": 1}}}')
    with pytest.raises(StateError, match="damaged"):
        load_state(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError):
        load_state(tmp_path)


_HOLDER = """
import sys, time
from pathlib import Path
from trace2skill.state import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_second_process_gets_lock_held_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(LockHeld) as caught, run_lock(tmp_path):
            pytest.fail("the lock should be held by the other process")
        assert time.monotonic() - started < 1.0
        assert caught.value.exit_code == 75
    finally:
        holder.communicate("\n", timeout=10)
    with run_lock(tmp_path) as path:
        assert path == tmp_path / "run.lock"
