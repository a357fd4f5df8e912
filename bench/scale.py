"""Offline distil at growing corpus sizes: wall time, trajectories per second, peak memory.

The corpus is the real one: the 500 mini-swe-agent trajectories in
`../shared/data/mini-swe-agent-swebench-verified` (relative to the repository root), copied
with fresh ids (`<instance>-copyN`) to reach each size, one `.traj.json` file each, with a
`results_summary.json` beside the folder carrying each copy's real resolved/failed label (so
the behaviour contrast runs as on the real corpus). Inputs are built once per size in a
temporary folder (`--keep DIR` keeps them for the next invocation).

Each measurement is a fresh `python cli.py distill` subprocess (offline, `--executor E
--workers W`); its peak memory is the child's own high-water mark (`VmHWM`, exact) or, when it
has worker processes, the largest sum of the resident sets of the child and its workers
(sampled every 0.2 s), whichever is larger; the figures are printed as ratios against the
first size measured in the same invocation.

Usage: `python bench/scale.py [--sizes 500,5000] [--executors local,process] [--workers 2]
[--keep DIR]`. Ray rows need `pip install 'trace2skill[ray]'` (`--executors local,ray`).
When the shared corpus is absent the script says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
CORPUS = "mini-swe-agent-swebench-verified"


@dataclass(frozen=True)
class Measured:
    executor: str
    workers: int
    size: int
    seconds: float
    peak_mb: float
    traces_read: int
    rules: int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,5000,50000", help="comma-separated corpus sizes; the first is the baseline")
    parser.add_argument("--executors", default="local,process", help="comma-separated: local, process, ray")
    parser.add_argument("--workers", type=int, default=2, help="workers of the process and ray executors")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the inputs here instead of a temporary folder")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    sources = sorted((args.data / CORPUS / "trajs").glob("*/*.traj.json"))
    if not sources:
        print(f"the real corpus is absent ({args.data / CORPUS} has no trajectories); nothing was measured", file=sys.stderr)
        return 2
    labels = {row["instance_id"]: bool(row["resolved"])
              for row in json.loads((args.data / CORPUS / "results_summary.json").read_text())["instances"]}
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        base = args.keep or Path(tmp)
        rows = []
        for executor in args.executors.split(","):
            workers = 1 if executor == "local" else args.workers
            for size in sizes:
                folder = build(sources, labels, base / f"n{size}", size)
                rows.append(measure(executor, workers, size, folder, base / f"out-{executor}-{size}"))
                print(json.dumps(rows[-1].__dict__), file=sys.stderr, flush=True)
    print_table(rows)
    return 0


def build(sources: list[Path], labels: dict[str, bool], folder: Path, size: int) -> Path:
    """`size` copies of the real trajectories with distinct ids, and their labels; reused when complete."""
    trajs = folder / "trajs"
    summary = folder / "results_summary.json"
    if summary.is_file() and sum(1 for _ in trajs.iterdir()) == size:
        return trajs
    trajs.mkdir(parents=True, exist_ok=True)
    templates = []
    for path in sources:
        record = json.loads(path.read_text(encoding="utf-8"))
        instance = record.get("instance_id") or path.name.removesuffix(".traj.json")
        record["instance_id"] = "@@ID@@"
        templates.append((instance, json.dumps(record)))
    rows = []
    for n in range(size):
        instance, text = templates[n % len(templates)]
        ident = f"{instance}-copy{n // len(templates)}"
        (trajs / f"{ident}.traj.json").write_text(text.replace('"@@ID@@"', json.dumps(ident), 1), encoding="utf-8")
        rows.append({"instance_id": ident, "resolved": labels.get(instance, False)})
    summary.write_text(json.dumps({"instances": rows}), encoding="utf-8")
    return trajs


def measure(executor: str, workers: int, size: int, trajs: Path, out: Path) -> Measured:
    """One offline distil in a fresh subprocess, with the peak memory of it and its workers."""
    command = [sys.executable, str(ROOT / "cli.py"), "distill", str(trajs), "--out", str(out), "--skill", "scale",
               "--executor", executor, "--workers", str(workers), "--state-dir", str(out / "state"), "--json", "-q"]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, _tree_mb(child.pid, "VmRSS:"), _tree_mb(child.pid, "VmHWM:", own=True))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    stdout, stderr = child.communicate()
    if child.returncode not in (0, 3):
        raise SystemExit(f"{executor} at {size}: exit {child.returncode}: {stderr[-2000:]}")
    result = json.loads(stdout)
    if result["traces_read"] != size:
        raise SystemExit(f"{executor} at {size}: read {result['traces_read']} trajectories, expected {size}")
    return Measured(executor, workers, size, seconds, peak, result["traces_read"], result["rules_written"])


def _tree_mb(pid: int, field: str, own: bool = False) -> float:
    """`field` (`VmRSS:` or `VmHWM:`) of `pid`, summed over its descendants unless `own`."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1]) / 1024
            children = [] if own else Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return total


def print_table(rows: list[Measured]) -> None:
    header = ("executor", "workers", "trajectories", "wall s", "traj/s", "peak MB", "memory ratio", "time/traj ratio", "rules")
    lines = [header]
    for row in rows:
        base = next(r for r in rows if r.executor == row.executor)
        per, base_per = row.seconds / row.size, base.seconds / base.size
        lines.append((row.executor, str(row.workers), f"{row.size:,}", f"{row.seconds:.1f}", f"{row.size / row.seconds:.0f}",
                      f"{row.peak_mb:,.0f}", f"{row.peak_mb / base.peak_mb:.2f}", f"{per / base_per:.2f}", str(row.rules)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\nratios are against the first size of the same executor, measured in this invocation.")


if __name__ == "__main__":
    sys.exit(main())
