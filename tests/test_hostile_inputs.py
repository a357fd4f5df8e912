"""Hostile and unlucky input files: each is skipped with a reason naming it, and the batch
finishes in seconds. Everything here is a real file: real zips with the encrypted flag bit or
an unknown compression method in both headers, real FIFOs, real symlink loops, a real device
(/dev/null behind a symlink) and real gzip and zip bombs; the CLI runs in a subprocess with a
timeout, so a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from trace2skill.config import load_config
from trace2skill.ingest import load_traces

from conftest import ROOT

GOOD = json.dumps({"id": "good", "messages": [{"role": "user", "content": "fix the bug"}, {"role": "assistant", "content": "done"}]})
NEWLINES_MIB = gzip.compress(b"\n" * (1 << 20), 9)
"""One gzip member of 1 MiB of newlines (about 1 KB); gzip files may hold many members."""


def _patch_zip(path: Path, *, flag: int = 0, method: int | None = None) -> None:
    """Set bits in the general-purpose flag, or the compression method, of the first member,
    in both its local header and its central-directory entry (as another tool would write them)."""
    data = bytearray(path.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 6] |= flag
    data[central + 8] |= flag
    if method is not None:
        data[local + 8 : local + 10] = method.to_bytes(2, "little")
        data[central + 10 : central + 12] = method.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _hostile_folder(root: Path) -> dict[str, str]:
    """Plant one of each hostile kind beside a good trace; returns shown path -> expected reason."""
    root.mkdir()
    (root / "good.json").write_text(GOOD)
    _patch_zip(_zip(root / "encrypted.zip", {"a.json": GOOD.encode(), "b.json": GOOD.replace("good", "in-zip").encode()}), flag=0x1)
    _patch_zip(_zip(root / "ppmd.zip", {"a.json": GOOD.encode()}), method=98)
    _zip(root / "bomb.zip", {"bomb.json": b" " * (40 << 20)})
    (root / "bigint.json").write_text('{"id": "n", "messages": [{"role": "user", "content": "x", "n": ' + "9" * 5000 + "}]}")
    (root / "newlines.jsonl.gz").write_bytes(gzip.compress((GOOD.replace("good", "before-bomb") + "\n").encode()) + NEWLINES_MIB * 100)
    os.symlink("loop-b.json", root / "loop-a.json")
    os.symlink("loop-a.json", root / "loop-b.json")
    os.symlink("nowhere.json", root / "dangling.json")
    os.symlink("/dev/null", root / "device.json")
    os.mkfifo(root / "pipe.json")
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.json").write_text(GOOD.replace("good", "linked"))
    os.symlink(elsewhere, root / "linked-folder")
    return {
        f"{root / 'encrypted.zip'}!a.json": "encrypted zip member",
        f"{root / 'ppmd.zip'}!a.json": "zip compression method 98 (ppmd) is not supported",
        f"{root / 'bomb.zip'}!bomb.json": "ingest.max_ratio",
        str(root / "bigint.json"): "a number too big to parse",
        str(root / "newlines.jsonl.gz"): "ingest.max_ratio",
        str(root / "loop-a.json"): "symlink loop",
        str(root / "loop-b.json"): "symlink loop",
        str(root / "dangling.json"): "broken symlink",
        str(root / "device.json"): "a character device, not a regular file; not opened",
        str(root / "pipe.json"): "a named pipe (FIFO), not a regular file; not opened",
        str(root / "linked-folder"): "symlinked folder not followed",
    }


def test_each_hostile_file_is_skipped_by_name_through_the_cli(tmp_path):
    expected = _hostile_folder(tmp_path / "in")
    started = time.monotonic()
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "ingest", str(tmp_path / "in"), "--json"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    reasons = {s["path"]: s["reason"] for s in report["skips"]}
    assert set(reasons) == set(expected), reasons
    for path, reason in expected.items():
        assert reason in reasons[path], (path, reasons[path])
    # good.json, the unencrypted zip member, and the record before the gzip bomb's newlines
    assert report["traces"] == 3 and "Traceback" not in run.stderr
    assert elapsed < 30, f"took {elapsed:.1f}s"


def test_a_fifo_given_by_name_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "trace.json")
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "ingest", str(tmp_path / "trace.json"), "--check"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 66 and "trace.json: a named pipe (FIFO)" in run.stdout, run.stdout + run.stderr


def test_a_megabyte_gzip_of_newlines_takes_seconds_not_minutes(tmp_path):
    path = tmp_path / "blank.jsonl.gz"
    path.write_bytes(NEWLINES_MIB * 1000)
    assert path.stat().st_size < 1_100_000
    started = time.monotonic()
    result = load_traces([path])
    assert time.monotonic() - started < 20
    (skip,) = result.skips
    assert skip.path == str(path) and "more than 200x" in skip.reason and "a zip or gzip bomb?" in skip.reason


def test_blank_lines_between_records_are_skipped_and_line_numbers_stay_right(tmp_path):
    path = tmp_path / "gappy.jsonl.gz"
    lines = [GOOD.replace("good", "first"), "", "  ", *[""] * 100_000, GOOD.replace("good", "second"), "not json"]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    result = load_traces([path])
    assert [t.id for t in result.traces] == ["first", "second"]
    (skip,) = result.skips
    assert skip.record == f"line {len(lines)}" and "invalid JSON" in skip.reason


def test_an_integer_too_big_on_one_jsonl_line_skips_that_line_only(tmp_path):
    path = tmp_path / "dump.jsonl"
    path.write_text(GOOD + "\n" + '{"id": "big", "n": ' + "1" * 4301 + "}\n" + GOOD.replace("good", "after") + "\n")
    result = load_traces([path])
    assert [t.id for t in result.traces] == ["after", "good"]
    (skip,) = result.skips
    assert skip.record == "line 2" and "4300 digits" in skip.reason


def test_file_size_limit_is_configurable(tmp_path):
    (tmp_path / "small.json").write_text(GOOD)
    (tmp_path / "large.json").write_text(GOOD.replace("fix the bug", "x" * 5000))
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "ingest", str(tmp_path), "--json", "--set", "ingest.max_file_bytes=4096"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    report = json.loads(run.stdout)
    assert report["traces"] == 1
    (skip,) = report["skips"]
    assert skip["path"] == str(tmp_path / "large.json") and "above ingest.max_file_bytes (4,096)" in skip["reason"]
    config = load_config(overrides={"ingest.max_ratio": "5000"}, env={}, cwd=tmp_path)
    gz = tmp_path / "ok.jsonl.gz"
    gz.write_bytes(gzip.compress((GOOD + "\n").encode()) + NEWLINES_MIB * 100)
    assert [t.id for t in load_traces([gz], config).traces] == ["good"] and load_traces([gz], config).skips == []


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs the zip tool to write a password-protected archive")
def test_a_real_password_protected_zip_is_skipped(tmp_path):
    (tmp_path / "t.json").write_text(GOOD)
    subprocess.run(["zip", "-q", "-P", "secret", "locked.zip", "t.json"], cwd=tmp_path, check=True)
    result = load_traces([tmp_path / "locked.zip"])
    (skip,) = result.skips
    assert skip.path == f"{tmp_path / 'locked.zip'}!t.json" and "encrypted zip member" in skip.reason


def test_a_symlink_loop_given_by_name_is_a_skip_not_a_missing_path(tmp_path):
    os.symlink("b.json", tmp_path / "a.json")
    os.symlink("a.json", tmp_path / "b.json")
    (tmp_path / "good.json").write_text(GOOD)
    result = load_traces([tmp_path / "a.json", tmp_path / "good.json"])
    assert [t.id for t in result.traces] == ["good"]
    (skip,) = result.skips
    assert skip.path == str(tmp_path / "a.json") and "symlink loop" in skip.reason
