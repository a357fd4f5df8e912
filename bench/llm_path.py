"""The model path against its critical path: `distill` through the CLI against a fake model.

A fake OpenAI-compatible server (`tests/fakeserver.py`, in this process, on 127.0.0.1) answers
every request after a set latency (default 500 ms). The analyst's answer is three lessons no
other trajectory shares (worded from the trace id), the merger's is "nothing to group", so the
merge tree is as large as it can be and its windows are known in advance. The corpus is the
40 real demo runs in `traces/` replicated with distinct ids (`<instance>-copyK`, labels copied)
to 40, 200 and 500 trajectories. Each run is `python cli.py distill ...` in a fresh process
and a fresh state folder, so the wall time includes Python, imports, ingest, the quote,
authoring and writing.

Critical path (the run's physical limit, given the latency L and the concurrency c):

    critical = L * (1 + ceil(A / c) + sum over merge levels l of ceil(W_l / c))

1 is the preflight request, A the analyses (one per trajectory), W_l the merge-model windows
at level l of the tree (every window of every merge at that level may be in flight at once).
It is the wall time of a perfect level-by-level schedule with no CPU time at all. A schedule
that starts merges while analyses are still running can beat it (ratio below 1).

Printed per size and concurrency (medians of `--repeat` runs):
- wall / critical: the whole command, process start to exit;
- LLM window / critical: first request sent to last answer received (server clock);
- idle share: the part of the wall time with no request in flight.
The run is checked against independent counts: the analyses the server saw must equal the
trajectories, the merge windows the sum of W_l (computed here from the fan-in and the window
size, not by the pipeline).

Usage: `python bench/llm_path.py [--sizes 40,200,500] [--concurrency 8,32] [--latency 0.5] [--repeat 3]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "traces" / "mini-swe-agent-swebench-verified"
MODEL = "openai/fake-model"
FAN_IN = 5
"""`consolidate.fan_in`'s default; the run is given it explicitly."""
WINDOW = 40
"""`consolidate.MERGE_WINDOW`: most lessons one merge call judges."""
LESSONS = 3
"""Lessons the fake analyst returns per trajectory."""

sys.path.insert(0, str(ROOT / "tests"))
from fakeserver import FakeServer, LoggedRequest  # noqa: E402


@dataclass(frozen=True)
class Measure:
    wall: float
    window: float
    busy: float
    first_call: float
    analyses: int
    merges: int
    in_flight: int


def build_corpus(dest: Path, count: int) -> Path:
    """`count` trajectories: the demo runs in name order, then copies with distinct ids."""
    sources = sorted((DEMO / "trajs").glob("*/*.traj.json"))
    resolved = {i["instance_id"]: i["resolved"] for i in json.loads((DEMO / "results_summary.json").read_text())["instances"]}
    instances = []
    for n in range(count):
        source = sources[n % len(sources)]
        instance = source.name.removesuffix(".traj.json")
        ident = instance if n < len(sources) else f"{instance}-copy{n // len(sources)}"
        record = json.loads(source.read_text(encoding="utf-8"))
        record["instance_id"] = ident
        (dest / "trajs" / ident).mkdir(parents=True)
        (dest / "trajs" / ident / f"{ident}.traj.json").write_text(json.dumps(record), encoding="utf-8")
        instances.append({"instance_id": ident, "resolved": resolved[instance], "patch_applied": True})
    passed = sum(i["resolved"] for i in instances)
    summary = {"total": count, "passed": passed, "failed": count - passed, "instances": instances}
    (dest / "results_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    shutil.copy(DEMO / "LICENSE.md", dest / "LICENSE.md")
    return dest


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """The fake model: preflight, merger or analyst, by what the request asks."""
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    if "connection works" in system:
        return {"ok": True}
    if "consolidating lessons" in user:
        return {"groups": [], "contradictions": []}
    found = re.search(r"\[trace\] ([^ |\n]+)", user)
    ident = found.group(1) if found else "unknown"
    return {"lessons": [dict(title=f"Lesson {i} of {ident}", rule=f"Apply case {i} of {ident}.", when=f"When in {ident} {i}.",
                             kind="procedure", subject=f"s{i}{ident}", polarity="do", steps=[1], quote="", cause="")
                        for i in range(LESSONS)]}


def is_merge(request: LoggedRequest) -> bool:
    return "consolidating lessons" in request.body["messages"][1]["content"]


def is_analysis(request: LoggedRequest) -> bool:
    return "\n<trajectory>\n" in request.body["messages"][1]["content"]


def windows_per_level(trajectories: int) -> list[int]:
    """W_l: merge-model calls at each level when every analysis yields `LESSONS` distinct lessons."""
    sizes, levels = [LESSONS] * trajectories, []
    while len(sizes) > 1:
        groups = [sizes[i : i + FAN_IN] for i in range(0, len(sizes), FAN_IN)]
        if len(groups) > 1 and len(groups[-1]) == 1:
            groups[-2].extend(groups.pop())
        sizes = [sum(g) for g in groups]
        levels.append(sum(s // WINDOW + (1 if s % WINDOW >= 2 else 0) for s in sizes))
    return levels


def critical_path(trajectories: int, concurrency: int, latency: float) -> float:
    rounds = 1 + math.ceil(trajectories / concurrency) + sum(math.ceil(w / concurrency) for w in windows_per_level(trajectories))
    return latency * rounds


def busy_time(requests: list[LoggedRequest]) -> float:
    """Seconds during which at least one request was in flight (the union of their intervals)."""
    total, end = 0.0, -math.inf
    for r in sorted(requests, key=lambda r: r.at):
        finished = r.finished or r.at
        if finished > end:
            total += finished - max(r.at, end)
            end = finished
    return total


def run_once(server: FakeServer, corpus: Path, work: Path, concurrency: int) -> Measure:
    """One `distill` in a fresh process and state folder; the server log gives the timings."""
    first = len(server.completions())
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | {"CI": "1"}
    command = [sys.executable, str(ROOT / "cli.py"), "distill", str(corpus), "--out", str(work / "out"), "--skill", "bench",
               "--model", MODEL, "--api-base", server.url, "--concurrency", str(concurrency), "--json", "-q",
               "--set", f"state_dir={work / 'state'}", "--set", f"consolidate.fan_in={FAN_IN}"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"distill exited {done.returncode}: {done.stderr[-2000:]}")
    requests = [r for r in server.completions()[first:]]
    window = max(r.finished or r.at for r in requests) - min(r.at for r in requests)
    return Measure(wall=wall, window=window, busy=busy_time(requests), first_call=min(r.at for r in requests) - started,
                   analyses=sum(map(is_analysis, requests)), merges=sum(map(is_merge, requests)),
                   in_flight=server.max_in_flight(requests))


def measure(server: FakeServer, tmp: Path, size: int, concurrency: int, latency: float, repeat: int) -> dict[str, Any]:
    corpus = build_corpus(tmp / f"corpus-{size}", size) if not (tmp / f"corpus-{size}").exists() else tmp / f"corpus-{size}"
    runs = []
    for n in range(repeat):
        work = tmp / f"run-{size}-{concurrency}-{n}"
        work.mkdir()
        runs.append(run_once(server, corpus, work, concurrency))
        shutil.rmtree(work)
    expected = sum(windows_per_level(size))
    for m in runs:
        if m.analyses != size or m.merges != expected:
            raise SystemExit(f"{size} at {concurrency}: the server saw {m.analyses} analyses and {m.merges} merge windows, "
                             f"expected {size} and {expected}")
    critical = critical_path(size, concurrency, latency)
    med = {k: statistics.median(getattr(m, k) for m in runs) for k in ("wall", "window", "busy", "first_call")}
    return {"trajectories": size, "concurrency": concurrency, "critical": critical, "wall": med["wall"], "window": med["window"],
            "idle": statistics.median(1 - m.busy / m.wall for m in runs), "first_call": med["first_call"],
            "in_flight": max(m.in_flight for m in runs), "calls": 1 + size + expected, "runs": len(runs)}


def print_table(rows: list[dict[str, Any]], latency: float) -> None:
    header = ("trajectories", "concurrency", "calls", "critical s", "wall s", "wall / critical", "LLM window / critical",
              "idle share of wall", "first call at s", "most in flight")
    lines = [header] + [(f"{r['trajectories']}", f"{r['concurrency']}", f"{r['calls']}", f"{r['critical']:.1f}",
                         f"{r['wall']:.1f}", f"{r['wall'] / r['critical']:.2f}", f"{r['window'] / r['critical']:.2f}",
                         f"{r['idle']:.2f}", f"{r['first_call']:.1f}", f"{r['in_flight']}") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"\nlatency {latency * 1000:.0f} ms; medians of {rows[0]['runs']} runs; "
          "critical = L * (1 + ceil(A/c) + sum_l ceil(W_l/c)) (see the script's docstring)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="40,200,500", help="trajectory counts, comma-separated")
    parser.add_argument("--concurrency", default="8,32", help="values of --concurrency, comma-separated")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the fake model takes per answer")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (the median is printed)")
    args = parser.parse_args(argv)
    if not (DEMO / "trajs").is_dir():
        print(f"the demo corpus is absent ({DEMO}); nothing was measured", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="llm-path-bench-") as tmp, FakeServer(reply=answer, latency=args.latency) as server:
        for size in (int(s) for s in args.sizes.split(",")):
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                rows.append(measure(server, Path(tmp), size, concurrency, args.latency, args.repeat))
                print(f"measured {size} at concurrency {concurrency}", file=sys.stderr, flush=True)
    print_table(rows, args.latency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
