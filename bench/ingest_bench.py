"""Ingest throughput and peak memory against plain `json.loads` of the same bytes.

The corpus is the real one: the 500 mini-swe-agent trajectories in
`../shared/data/mini-swe-agent-swebench-verified` (relative to the repository root),
replicated with fresh ids to reach the requested size. Two inputs are built in a temporary
folder and streamed from disk:

- a JSONL dump of `--n` OpenAI-chat conversations (default 10,000, about 0.9 GB), one per line;
- a folder of `--traj-n` untouched `.traj.json` files (default 1,000, about 200 MB).

Each measurement runs in a fresh subprocess, so its peak RSS is its own: the baseline reads
the same bytes and calls `json.loads` on every line or file; the ingest run consumes
`trace2skill.ingest.iter_traces` (detect, parse, build `Trace`s, join labels, redact) while
keeping nothing, which is how a streaming consumer uses it. A peak RSS far below the file
size shows the dump was never loaded whole.

The first table (`--real`, on by default) measures the real corpora as they are, with no
copies: the 500 mini-swe-agent runs (with their harness logs, whose labels are joined) and
`../shared/data/real-formats` (ten formats, not used to tune ingest). Per corpus it prints:

- `iter_traces`: time to consume `iter_traces` in a fresh process (imports not counted),
  over the time to read and `json.loads` every file, JSONL line and `.eval` zip member of the
  same corpus (also imports not counted);
- `ingest --check`: the wall time of `python cli.py ingest PATH --check` as a user runs it
  (interpreter start, imports, label joining, redaction, digests, fidelity, the report), over
  the wall time of a fresh `python` process doing the `json.loads` of the same files.

Both are CPU seconds (user + system) of a single-threaded process, which is its wall time on
an idle machine and far steadier than wall time on a shared one; each figure is the best of
`--repeat` runs (default 3).

The two processes run with a bytecode cache (in a temporary folder, filled by one run first),
as an installed package has: `pip` compiles it at install time. The `ingest --check` process
is also measured compiling trace2skill from source on every run, which is what a checkout
does under `PYTHONDONTWRITEBYTECODE=1` (set on the machine these figures were taken on).

`--instructions` measures instructions executed instead of time (valgrind `callgrind`, which
the machine's load does not change): `iter_traces` in a process minus the same process
stopping after its imports, over reading and `json.loads` likewise, on the first `--runs`
(default 60) run folders of the mini-swe-agent corpus (`trajs/` and `logs/` linked into a
temporary folder, to keep valgrind's run short) and on `real-formats`. It takes about five
minutes; without valgrind it says so and exits with status 2.

Usage: `python bench/ingest_bench.py [--n 10000] [--traj-n 1000] [--data PATH] [--only real|synthetic]
[--instructions [--runs 60]]`. The default run takes about two to three minutes on two cores.
When the shared corpus is absent the script says so and exits with status 2, measuring nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = next((d for d in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if d.is_dir()),
                    ROOT.parent / "shared" / "data")
"""`../shared/data` beside the checkout, or two levels up for a worktree under `wt/`."""
CORPUS = "mini-swe-agent-swebench-verified"
REAL_CORPORA = (CORPUS, "real-formats")
_PARSED_SUFFIXES = (".json", ".jsonl", ".ndjson", ".traj", ".gz", ".eval")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="conversations in the JSONL dump")
    parser.add_argument("--traj-n", type=int, default=1_000, help=".traj.json files in the folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--only", choices=("real", "synthetic"), help="run one of the two tables")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure on the real corpora (the best counts)")
    parser.add_argument("--instructions", action="store_true", help="count instructions (valgrind callgrind) instead of time")
    parser.add_argument("--runs", type=int, default=60, help="mini-swe-agent run folders for --instructions")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(_measure(*args.measure)))
        return 0
    if args.instructions:
        return _instructions(args.data, args.runs)
    trajs = args.data / CORPUS / "trajs"
    sources = sorted(trajs.glob("*/*.traj.json"))
    if not sources:
        print(f"the real corpus is absent ({trajs} has no .traj.json files); nothing was measured", file=sys.stderr)
        return 2
    if args.only != "synthetic":
        _print_real([_real_row(args.data / name, args.repeat) for name in REAL_CORPORA if (args.data / name).is_dir()])
        if args.only == "real":
            return 0
    print(f"\ncorpus: {len(sources)} real trajectories from {trajs}")
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        started = time.perf_counter()
        dump = _write_jsonl(sources, Path(tmp) / "conversations.jsonl", args.n)
        folder = _write_folder(sources, Path(tmp) / "trajs", args.traj_n)
        print(f"built the inputs in {time.perf_counter() - started:.1f} s\n")
        rows = [_row("openai-chat JSONL", dump, args.n), _row(".traj.json folder", folder, args.traj_n)]
    _print_table(rows)
    return 0


def _templates(sources: list[Path], as_chat: bool) -> list[tuple[str, str]]:
    """One JSON text per source with a placeholder id, so copies cost a string replace."""
    templates = []
    for path in sources:
        record = json.loads(path.read_text(encoding="utf-8"))
        instance = record.get("instance_id") or path.name.removesuffix(".traj.json")
        if as_chat:
            messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
            record = {"id": "@@ID@@", "messages": messages}
        else:
            record["instance_id"] = "@@ID@@"
        templates.append((instance, json.dumps(record)))
    return templates


def _copies(templates: list[tuple[str, str]], count: int):
    for n in range(count):
        instance, text = templates[n % len(templates)]
        yield f"{instance}-copy{n // len(templates)}", text.replace('"@@ID@@"', json.dumps(f"{instance}-copy{n // len(templates)}"), 1)


def _write_jsonl(sources: list[Path], path: Path, count: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for _, text in _copies(_templates(sources, as_chat=True), count):
            out.write(text + "\n")
    return path


def _write_folder(sources: list[Path], folder: Path, count: int) -> Path:
    folder.mkdir()
    for ident, text in _copies(_templates(sources, as_chat=False), count):
        (folder / f"{ident}.traj.json").write_text(text, encoding="utf-8")
    return folder


def _row(label: str, path: Path, expected: int) -> dict:
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir())
    baseline = _subprocess("baseline", path)
    ingest = _subprocess("ingest", path)
    if ingest["records"] != expected:
        raise SystemExit(f"{label}: ingest produced {ingest['records']} traces, expected {expected}: {ingest}")
    return {"label": label, "records": expected, "mb": size / 1e6, "baseline": baseline, "ingest": ingest}


def _subprocess(kind: str, path: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", kind, str(path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout)


def _measure(kind: str, raw_path: str) -> dict:
    path = Path(raw_path)
    if kind in ("ingest", "ingest-imports"):
        from trace2skill.ingest import iter_traces
        from trace2skill.types import Skip
    if kind in ("imports", "ingest-imports"):  # for --instructions: what a measured process costs before it reads
        return {}
    started, cpu = time.perf_counter(), time.process_time()
    records = skips = 0
    if kind == "parse-all":
        records = _parse_all(path)
    elif kind == "baseline":
        files = [path] if path.is_file() else sorted(path.iterdir())
        for file in files:
            with file.open("rb") as stream:
                chunks = stream if path.is_file() else [stream.read()]
                for chunk in chunks:
                    json.loads(chunk)
                    records += 1
    else:
        for item in iter_traces([path]):
            skips += isinstance(item, Skip)
            records += not isinstance(item, Skip)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu": cpu, "records": records, "skips": skips, "peak_rss_mb": _peak_rss_mb()}


def _parse_all(folder: Path) -> int:
    """Read and `json.loads` every JSON text in `folder` the way a plain script would: whole
    files, else line by line; `.gz` files unpacked; every JSON member of an `.eval` zip.
    Markdown and SQLite files are read, not parsed. Returns how many values were parsed."""
    values = 0
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        lower = file.name.lower()
        if lower.endswith(".eval"):
            with zipfile.ZipFile(file) as archive:
                for name in archive.namelist():
                    if name.endswith(".json"):
                        json.loads(archive.read(name))
                        values += 1
            continue
        if not lower.endswith(_PARSED_SUFFIXES):
            if lower.endswith((".md", ".db")):
                file.read_bytes()
            continue
        data = gzip.decompress(file.read_bytes()) if lower.endswith(".gz") else file.read_bytes()
        try:
            json.loads(data)
            values += 1
        except ValueError:
            for line in data.splitlines():
                if line.strip():
                    json.loads(line)
                    values += 1
    return values


def _real_row(folder: Path, repeat: int) -> dict:
    """Best-of-`repeat` times for one real corpus: json.loads, iter_traces, the CLI."""
    parse = [_subprocess("parse-all", folder) for _ in range(repeat)]
    ingest = [_subprocess("ingest", folder) for _ in range(repeat)]
    parse_command = [sys.executable, str(Path(__file__).resolve()), "--measure", "parse-all", str(folder)]
    check_command = [sys.executable, str(ROOT / "cli.py"), "ingest", str(folder), "--check"]
    with tempfile.TemporaryDirectory(prefix="ingest-bench-pyc-") as cache, tempfile.TemporaryDirectory(prefix="ingest-bench-nopyc-") as empty:
        _wall(parse_command, cache), _wall(check_command, cache)  # fill the bytecode cache
        parse_wall = [_wall(parse_command, cache) for _ in range(repeat)]
        check_wall = [_wall(check_command, cache) for _ in range(repeat)]
        source_wall = [_wall(check_command, empty, write=False) for _ in range(repeat)]
    return {"label": folder.name, "traces": ingest[0]["records"], "values": parse[0]["records"],
            "parse": min(r["cpu"] for r in parse), "ingest": min(r["cpu"] for r in ingest),
            "parse_wall": min(parse_wall), "check_wall": min(check_wall), "source_wall": min(source_wall)}


def _instructions(data: Path, runs: int) -> int:
    """Millions of instructions (callgrind) of reading and `json.loads`, and of `iter_traces`,
    on the first `runs` mini-swe-agent run folders and on real-formats; each is its process
    minus the same process stopping after its imports."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed; --instructions needs its callgrind tool", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ingest-bench-ir-") as tmp:
        corpora = [(f"mini-swe-agent, first {runs} runs", _first_runs(data / CORPUS, Path(tmp), runs))]
        if (data / "real-formats").is_dir():
            corpora.append(("real-formats", data / "real-formats"))
        parse_base, ingest_base = _callgrind("imports", Path(tmp)), _callgrind("ingest-imports", Path(tmp))
        lines = [("input", "json.loads, M instructions", "iter_traces, M instructions", "ratio")]
        for label, path in corpora:
            parse, ingest = _callgrind("parse-all", path) - parse_base, _callgrind("ingest", path) - ingest_base
            lines.append((label, f"{parse / 1e6:,.0f}", f"{ingest / 1e6:,.0f}", f"{ingest / parse:.2f}x"))
    _print_lines(lines)
    print("\nInstructions executed (valgrind callgrind), each process minus the same process stopping after its imports.")
    return 0


def _first_runs(corpus: Path, tmp: Path, runs: int) -> Path:
    """The first `runs` folders of `trajs/` and `logs/` (their files linked) in a folder under `tmp`."""
    folder = tmp / "runs"
    for part in ("trajs", "logs"):
        for run in sorted(p for p in (corpus / part).iterdir() if p.is_dir())[:runs]:
            (folder / part / run.name).mkdir(parents=True)
            for file in sorted(run.iterdir()):
                (folder / part / run.name / file.name).symlink_to(file.resolve())
    return folder


def _callgrind(kind: str, path: Path) -> int:
    """Instructions the `--measure KIND PATH` process executes, start-up included."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, str(Path(__file__).resolve()), "--measure", kind, str(path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    collected = [line for line in done.stderr.splitlines() if "Collected" in line]
    return int(collected[-1].split()[-1])


def _wall(command: list[str], pycache: str, *, write: bool = True) -> float:
    """CPU seconds (user + system) the command's process used, start-up and imports included,
    with bytecode kept in `pycache` (`write=False`: read from there, never written, so an
    empty folder makes every module compile from source)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONPYCACHEPREFIX": pycache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _print_real(rows: list[dict]) -> None:
    header = ("corpus", "traces", "JSON values", "json.loads s", "iter_traces s", "ratio",
              "python json.loads process s", "ingest --check process s", "ratio", "from source s", "ratio")
    lines = [header] + [
        (r["label"], f"{r['traces']:,}", f"{r['values']:,}", f"{r['parse']:.2f}", f"{r['ingest']:.2f}",
         f"{r['ingest'] / r['parse']:.1f}x", f"{r['parse_wall']:.2f}", f"{r['check_wall']:.2f}",
         f"{r['check_wall'] / r['parse_wall']:.1f}x", f"{r['source_wall']:.2f}", f"{r['source_wall'] / r['parse_wall']:.1f}x")
        for r in rows
    ]
    _print_lines(lines)
    print("\nCPU seconds, best of the runs. iter_traces ratio: in-process time over reading and json.loads of the same"
          "\nfiles (imports not counted); ingest --check ratio: the whole `python cli.py ingest PATH --check` process"
          "\n(start-up and imports included) over a whole `python` process doing that json.loads, both with a bytecode"
          "\ncache as installed; from source: the same command compiling trace2skill from source on every run.")


def _print_lines(lines: list[tuple[str, ...]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's `ru_maxrss` survives `exec` (a child
    would report its parent's peak), so prefer `VmHWM`, which belongs to the new address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _print_table(rows: list[dict]) -> None:
    header = ("input", "trajectories", "size MB", "json.loads s", "ingest s", "ingest MB/s", "ratio", "peak RSS MB: json.loads / ingest")
    lines = [header]
    for row in rows:
        base, ours = row["baseline"], row["ingest"]
        lines.append(
            (
                row["label"],
                f"{row['records']:,}",
                f"{row['mb']:,.0f}",
                f"{base['seconds']:.1f}",
                f"{ours['seconds']:.1f}",
                f"{row['mb'] / ours['seconds']:.0f}",
                f"{ours['seconds'] / base['seconds']:.1f}x",
                f"{base['peak_rss_mb']:,.0f} / {ours['peak_rss_mb']:,.0f}",
            )
        )
    _print_lines(lines)
    print("\nratio = ingest time / json.loads time on the same bytes, measured in this run.")


if __name__ == "__main__":
    sys.exit(main())
