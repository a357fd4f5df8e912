"""The generic offline analyst and the SWE pack on real runs, checked against independent counts.

Expected numbers come from a few lines of plain Python over the raw files (never from the
analyst), or from reading the trajectory (the steps are cited next to each expectation).
"""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.config import load_config
from trace2skill.ingest import load_traces
from trace2skill.offline import packs
from trace2skill.offline.detect import error_line, failed
from trace2skill.offline.runs import Run, read_runs
from trace2skill.offline.select import observe
from trace2skill.offline.stats import benjamini_hochberg, fisher_exact
from trace2skill.offline.template import mask

DATA = Path(__file__).resolve().parent / "data"
TAU = DATA / "offline" / "tau-bench" / "gpt-4o-airline.json.gz"
SWE_AGENT = [DATA / "formats" / "swe_agent", DATA / "offline" / "swe-agent"]
MINI_500 = DATA / "formats" / "mini_swe_agent" / "mini-swe-agent-500.zip"
runner = CliRunner()


def _distill(tmp_path: Path, *paths: Path, name: str = "s") -> tuple[int, str, dict]:
    result = runner.invoke(app, ["distill", *map(str, paths), "--out", str(tmp_path), "--skill", name])
    provenance = tmp_path / name / "provenance.json"
    rules = json.loads(provenance.read_text(encoding="utf-8"))["rules"] if provenance.exists() else {}
    return result.exit_code, result.output, rules


def _shape(message: str) -> str:
    """The test's own normalisation of an error message: any token holding a digit becomes #."""
    return re.sub(r"[\w-]*\d[\w-]*", "#", " ".join(message.split()))


def _template_shape(template: str) -> str:
    """The same normalisation for a template the analyst wrote (its placeholders become #)."""
    return re.sub(r"<\w+>|\bN\b", "#", template)


# ------------------------------------------------------------------------------------------
# Templates, the test, and the detectors of each error family


def test_templates_mask_numbers_ids_paths_quotes_hashes_and_dates():
    assert mask("Error: payment amount does not add up, total price is 305, but paid 255") == (
        "Error: payment amount does not add up, total price is N, but paid N")
    assert mask("Error: flight HAT030 not available on date 2024-05-13") == (
        "Error: flight <id> not available on date <date>")
    assert mask("cat: /testbed/pkg/mod.py: No such file or directory") == "cat: <path>: No such file or directory"
    assert mask("KeyError: 'user_42'") == "KeyError: '…'"
    assert mask("fatal: bad object 3f9a2c1d8e7b") == "fatal: bad object <hash>"
    assert mask("<tool_use_error>File has not been read yet. Read it first before writing to it.</tool_use_error>") == (
        "File has not been read yet. Read it first before writing to it.")
    assert mask("===== 2 failed, 10 passed in 0.52s =====") == "N failed, N passed in <duration>"


def test_fisher_and_benjamini_hochberg_match_their_definitions():
    # [[3, 1], [1, 3]]: tables with the same margins have probabilities 1/70, 16/70, 36/70,
    # 16/70, 1/70; the observed one (16/70) and all as unlikely sum to 34/70.
    assert fisher_exact(3, 1, 1, 3) == pytest.approx(34 / 70)
    assert fisher_exact(5, 0, 0, 5) == pytest.approx(2 / 252)
    # BH: sorted p (0.01, 0.03, 0.04, 0.2) times m/rank = (0.04, 0.06, 0.0533, 0.2), made monotone.
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.0533333, 0.0533333, 0.2])


def _run(output: str, command: str = "make", exit_code: int | None = 1, tool: str = "bash", error: bool = False) -> Run:
    from trace2skill.offline.shell import family

    return Run(step=1, tool=tool, command=command, family=family(command, tool), output=output, exit_code=exit_code,
               is_error=error or bool(exit_code), arguments=command)


@pytest.mark.parametrize(("command", "output", "line"), [
    ("python app.py", 'Traceback (most recent call last):\n  File "app.py", line 3, in <module>\n    main()\n'
                      "ValueError: invalid literal for int() with base 10: 'x'\n",
     "ValueError: invalid literal for int() with base 10: 'x'"),
    ("node index.js", "/srv/index.js:4\n  x.map(f)\n    ^\n\nTypeError: Cannot read properties of undefined (reading 'map')\n"
                      "    at Object.<anonymous> (/srv/index.js:4:5)\n    at Module._compile (node:internal/modules/cjs/loader:1105:14)\n",
     "TypeError: Cannot read properties of undefined (reading 'map')"),
    ("go run .", "panic: runtime error: index out of range [3] with length 3\n\ngoroutine 1 [running]:\nmain.main()\n",
     "panic: runtime error: index out of range [3] with length 3"),
    ("cargo run", "thread 'main' panicked at src/main.rs:4:5:\nattempt to divide by zero\nnote: run with `RUST_BACKTRACE=1`\n",
     "thread 'main' panicked at src/main.rs:4:5:"),
    ("java -jar app.jar", 'Exception in thread "main" java.lang.NullPointerException: name is null\n'
                          "\tat App.main(App.java:5)\n", 'Exception in thread "main" java.lang.NullPointerException: name is null'),
    ("curl -f https://api.example.com/x", "curl: (22) The requested URL returned error: 404\n",
     "curl: (22) The requested URL returned error: 404"),
    ("npm test", "FAIL src/a.test.js\n  ● adds\n\nTests:       1 failed, 3 passed, 4 total\n", "Tests:       1 failed, 3 passed, 4 total"),
    ("go test ./...", "--- FAIL: TestAdd (0.00s)\n    add_test.go:9: got 3\nFAIL\nFAIL\tex/add\t0.002s\n", "FAIL\tex/add\t0.002s"),
    ("cargo test", "running 2 tests\ntest t ... FAILED\n\ntest result: FAILED. 1 passed; 1 failed; 0 ignored\n",
     "test result: FAILED. 1 passed; 1 failed; 0 ignored"),
    ("mvn test", "[ERROR] Tests run: 4, Failures: 1, Errors: 0, Skipped: 0\n[INFO] BUILD FAILURE\n",
     "[ERROR] Tests run: 4, Failures: 1, Errors: 0, Skipped: 0"),
    ("pytest tests", "tests/t.py F\n=========== 1 failed, 2 passed in 0.12s ===========\n", "=========== 1 failed, 2 passed in 0.12s ==========="),
    ("pytest", "bash: line 1: pytest: command not found\n", "bash: line 1: pytest: command not found"),
])
def test_each_error_family_gives_its_telling_line(command, output, line):
    run = _run(output, command)
    assert failed(run) and error_line(run) == line


def test_answers_are_not_failures_and_unflagged_error_reports_are():
    assert not failed(_run("", "grep -rn needle src", exit_code=1))          # no match
    assert not failed(_run("1c1\n< a\n---\n> b\n", "diff a b", exit_code=1))  # files differ
    assert failed(_run("Error: payment method not found", "", exit_code=None, tool="update_reservation"))
    assert failed(_run('{"error": "not allowed"}', "", exit_code=None, tool="api"))
    assert failed(_run("HTTP/1.1 503 Service Unavailable", "", exit_code=None, tool="fetch", error=True))
    assert not failed(_run('{"status": "ok"}', "", exit_code=None, tool="api"))


# ------------------------------------------------------------------------------------------
# tau-bench: 200 real runs of a customer-support agent (84 resolved, 116 failed)


def _tau_errors() -> dict[tuple[str, str], dict[str, set[str]]]:
    """(tool, normalised message) -> outcome -> run ids, straight from the raw results file."""
    records = json.loads(gzip.decompress(TAU.read_bytes()))
    groups: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for record in records:
        run_id = f"{record['task_id']}-{record.get('trial', 0)}-{id(record)}"
        outcome = "success" if record["reward"] >= 1 else "failure"
        for message in record["traj"]:
            if message.get("role") == "tool" and str(message.get("content", "")).startswith("Error"):
                groups[(message["name"], _shape(message["content"]))][outcome].add(run_id)
    return groups


@pytest.fixture(scope="module")
def tau_rules(tmp_path_factory) -> dict:
    code, output, rules = _distill(tmp_path_factory.mktemp("tau"), TAU)
    assert code == 0, output
    assert "--labels" not in output  # labelled runs get no labels hint
    return rules


def test_tau_bench_names_every_error_recurring_in_three_runs_with_exact_counts(tau_rules):
    recurring = {key: runs for key, runs in _tau_errors().items() if len(runs["success"] | runs["failure"]) >= 3}
    assert len(recurring) >= 5
    for (tool, shape), runs in recurring.items():
        matches = [r for r in tau_rules.values() if r["signature"].startswith(f"error:{tool}|")
                   and _template_shape(r["signature"].split("|", 1)[1]) == shape]
        assert len(matches) == 1, (tool, shape)
        rule = matches[0]
        assert (rule["failing_support"], rule["succeeding_support"]) == (len(runs["failure"]), len(runs["success"]))
        assert f"`{tool}` fails with" in rule["title"]
        assert f"in {len(runs['failure']) + len(runs['success'])} runs" in rule["rule"]


def test_tau_bench_payment_error_reads_as_the_issue_reports_it(tau_rules):
    rule = next(r for r in tau_rules.values() if "payment amount does not add up" in r["title"])
    assert rule["title"] == '`book_reservation` fails with "Error: payment amount does not add up, total price is N, but paid N"'
    assert "in 13 runs (12 failed, 1 resolved)" in rule["rule"]


def test_tau_bench_gets_no_swe_advice_and_behaviours_match_a_raw_count(tau_rules):
    assert all(r["signature"].startswith(("error:", "uses:", "sequence:", "after-edit:")) for r in tau_rules.values())
    records = json.loads(gzip.decompress(TAU.read_bytes()))
    called = {"success": [0, 0], "failure": [0, 0]}
    for record in records:
        side = called["success" if record["reward"] >= 1 else "failure"]
        side[1] += 1
        side[0] += any(c["function"]["name"] == "transfer_to_human_agents"
                       for m in record["traj"] if m.get("role") == "assistant" for c in m.get("tool_calls") or [])
    rule = next(r for r in tau_rules.values() if r["signature"] == "uses:transfer_to_human_agents")
    (s, n_s), (f, n_f) = called["success"], called["failure"]
    assert f"{s} of {n_s} resolved" in rule["rule"] and f"{f} of {n_f} failed" in rule["rule"]
    assert s / n_s > f / n_f and rule["polarity"] == "do"
    assert (rule["succeeding_support"], rule["failing_support"]) == (s, 0)  # evidence: the runs that argue for it


# ------------------------------------------------------------------------------------------
# Unlabelled corpora


def test_unlabelled_swe_agent_runs_teach_their_recurring_error(tmp_path):
    prefix = "Your proposed edit has introduced new syntax error(s). Please understand the fixes"
    hit = set()
    for folder in SWE_AGENT:
        for path in sorted(folder.glob("*.traj")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if any(str(step.get("observation", "")).startswith(prefix) for step in data.get("trajectory", [])):
                hit.add(path.name)
    code, output, rules = _distill(tmp_path, *SWE_AGENT)
    assert code == 0, output
    rule = next(r for r in rules.values() if prefix in r["title"] or prefix in r["rule"])
    assert rule["support"] == len(hit) == 3 and rule["failing_support"] == rule["succeeding_support"] == 0
    assert f"in {len(hit)} runs ({len(hit)} unlabelled)" in rule["rule"]


def test_a_corpus_where_nothing_recurs_writes_nothing_and_exits_3(tmp_path):
    code, output, rules = _distill(tmp_path, DATA / "formats" / "codex")
    assert code == 3, output
    assert "nothing was written" in output and "--labels" in output
    assert not (tmp_path / "s").exists() and rules == {}


# ------------------------------------------------------------------------------------------
# The SWE pack's behaviours on real mini-swe-agent runs, checked by reading them


@pytest.fixture(scope="module")
def pack_runs(tmp_path_factory) -> dict:
    """Three failed runs whose reproductions the old detector missed, read from the 500-run zip."""
    folder = tmp_path_factory.mktemp("mini")
    names = ["pylint-dev__pylint-7080", "sphinx-doc__sphinx-9461", "pylint-dev__pylint-6528"]
    with zipfile.ZipFile(MINI_500) as archive:
        for name in names:
            (folder / f"{name}.traj.json").write_bytes(archive.read(f"trajs/{name}/{name}.traj.json"))
    traces = load_traces([folder], load_config(None, {})).traces
    return {t.id: {s.signature: s for s in observe(t)[0]} for t in traces}


def test_reproductions_built_before_the_first_source_edit_count(pack_runs):
    # pylint-7080: steps 3-4 build a scratch project (`mkdir reproduce_issue`, `cd reproduce_issue
    # && cat <<EOF > pyproject.toml ...`), step 6 runs `python3 -m pylint --recursive=y src/` on it;
    # step 20's script stops with "Error: Line 613 does not match", step 22's rewrites
    # pylint/lint/pylinter.py ("Successfully modified"): the first source edit.
    assert pack_runs["pylint-dev__pylint-7080"]["behaviour:reproduce-first"].steps == (6, 22)
    # sphinx-9461: step 3 writes reproduction.py, step 4 docs/conf.py, step 5 builds them with
    # `python3 -m sphinx.cmd.build`; step 26 is `sed -i ... sphinx/ext/autodoc/importer.py`.
    assert pack_runs["sphinx-doc__sphinx-9461"]["behaviour:reproduce-first"].steps == (5, 26)
    # pylint-6528: step 3 writes test inputs (.a/foo.py, bar.py, added to the patch as new files),
    # step 5 runs `python3 reproduce_issue.py` (it timed out), step 21 runs update_pylinter.py,
    # which rewrites pylint/lint/pylinter.py.
    assert pack_runs["pylint-dev__pylint-6528"]["behaviour:reproduce-first"].steps == (5, 21)


def test_after_edit_and_patch_behaviours_on_real_runs(pack_runs):
    # pylint-7080: the last source edit is step 47 (remove_debug.py rewrites pylinter.py); step 58
    # re-runs the reproduction (exit 16: pylint's convention-message bit, findings, not a failure);
    # step 67 runs `pytest tests/lint/unittest_expand_modules.py`, which passes; no `git diff` after.
    run = pack_runs["pylint-dev__pylint-7080"]
    assert run["behaviour:rerun-repro-after-edit"].steps == (47, 58)
    assert run["behaviour:tests-after-edit"].steps == (47, 67)
    assert "behaviour:review-diff" not in run and "behaviour:patch-spread" not in run
    # sphinx-9461: the patch submitted at step 62 modifies sphinx/ext/autodoc/__init__.py and importer.py.
    assert pack_runs["sphinx-doc__sphinx-9461"]["behaviour:patch-spread"].steps == (62,)
    # pylint-6528: 16 source edits, the 9th at step 63 (`sed -i '/DEBUG: ignore=/a ...' pylinter.py`);
    # the patch at step 98 adds test_walk.py, a scratch file.
    run = pack_runs["pylint-dev__pylint-6528"]
    assert run["behaviour:edit-churn"].steps == (63,)
    assert run["behaviour:scratch-in-patch"].quote == "diff --git a/test_walk.py b/test_walk.py -> new file mode 100644"


def test_the_swe_pack_applies_only_where_its_signatures_fire(pack_runs):
    swe = packs.PACKS[0]
    tau = load_traces([TAU], load_config(None, {})).traces[:20]
    assert not any(swe.applies(t, read_runs(t)) for t in tau)
    assert all("behaviour:reproduce-first" in shown for shown in pack_runs.values())


# ------------------------------------------------------------------------------------------
# Claude Code sessions and tau2-bench simulations (real files from tests/data/real/)

REAL = DATA / "real"


def _claude_code_errors() -> dict[tuple[str, str], set[str]]:
    """(tool, normalised first line) -> session ids, for failed tool results of the main chain
    (Bash results are keyed by their whole text, whose first line is only `Exit code N`)."""
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted((REAL / "claude_code").rglob("*.jsonl")):
        if "subagents" in path.parts:
            continue
        names: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            event = json.loads(line) if line.strip() else {}
            content = (event.get("message") or {}).get("content") if isinstance(event.get("message"), dict) else None
            if event.get("isSidechain") or not isinstance(content, list):
                continue
            for block in content:
                if block.get("type") == "tool_use":
                    names[block["id"]] = block["name"]
                elif block.get("type") == "tool_result" and block.get("is_error"):
                    text = block.get("content")
                    text = text if isinstance(text, str) else " ".join(b.get("text", "") for b in text or [])
                    first = re.sub(r"</?\w+>", "", text).strip().splitlines()[0] if text.strip() else ""
                    tool = names.get(block.get("tool_use_id"), "?")
                    groups[(tool, _shape(text if tool == "Bash" else first))].add(event["sessionId"])
    return groups


def test_claude_code_sessions_name_each_recurring_tool_error_with_exact_counts(tmp_path):
    code, output, rules = _distill(tmp_path, REAL / "claude_code")
    assert code == 0, output
    groups = _claude_code_errors()
    recurring = {key: ids for key, ids in groups.items() if len(ids) >= 2 and key[0] != "Bash"}
    # The issue's two Edit/Read messages are no longer one `tool-error:edit` lesson.
    assert {("Edit", "String to replace not found in file."), ("Read", "File does not exist.")} <= set(recurring)
    for (tool, shape), ids in recurring.items():
        matches = [r for r in rules.values() if r["signature"].startswith(f"error:{tool.lower()}|")
                   and _template_shape(r["signature"].split("|", 1)[1]) == shape]
        assert len(matches) == 1, (tool, shape)
        assert matches[0]["support"] == len(ids) and f"in {len(ids)} runs ({len(ids)} unlabelled)" in matches[0]["rule"]
    # A Bash failure keyed by the command that failed: `mix` (`cd ... && mix test ...`) in two sessions.
    secret = {s for (tool, shape), ids in groups.items() if tool == "Bash" and "secret_key_base" in shape for s in ids}
    rule = next(r for r in rules.values() if r["signature"].startswith("error:mix|") and "secret_key_base" in r["signature"])
    assert rule["support"] == len(secret) == 2
    # And the one Bash error that recurs in four sessions: `git push` of a branch with no upstream
    # (each names its own branch; templates that differ in one word are one message).
    upstream = {s for (tool, shape), ids in groups.items() if tool == "Bash" and "has no upstream branch" in shape for s in ids}
    rule = next(r for r in rules.values() if r["signature"].startswith("error:git push|") and "no upstream" in r["signature"])
    assert rule["support"] == len(upstream) == 4


def test_tau2_simulations_teach_only_what_their_numbers_back(tmp_path):
    errors: dict[tuple[str, str], set[str]] = defaultdict(set)
    transfer = {"success": [0, 0], "failure": [0, 0]}
    for path in sorted((REAL / "tau2").glob("*.json")):
        for sim in json.loads(path.read_text(encoding="utf-8"))["simulations"]:
            side = transfer["success" if sim["reward_info"]["reward"] >= 1 else "failure"]
            side[1] += 1
            side[0] += any(c["name"] == "transfer_to_human_agents" for m in sim["messages"]
                           if m["role"] == "assistant" for c in m.get("tool_calls") or [])
            for message in sim["messages"]:
                if message["role"] == "tool" and message.get("error") and message.get("requestor") == "assistant":
                    errors[(message["content"], "")].add(sim["id"])
    code, output, rules = _distill(tmp_path, REAL / "tau2")
    assert code == 0, output
    # One agent tool error in 21 simulations, in one run: nothing recurs, so no error rule.
    assert sum(len(ids) for ids in errors.values()) == 1
    assert not [r for r in rules.values() if r["signature"].startswith("error:")]
    rule = next(r for r in rules.values() if r["signature"] == "uses:transfer_to_human_agents")
    (s, n_s), (f, n_f) = transfer["success"], transfer["failure"]
    assert f"{s} of {n_s} resolved" in rule["rule"] and f"{f} of {n_f} failed" in rule["rule"]
    assert rule["polarity"] == "avoid" and (rule["failing_support"], rule["succeeding_support"]) == (f, 0)
