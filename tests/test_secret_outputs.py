"""A planted secret of each of the 77 kinds in `secret_corpus` reaches no output: not the
prompts the model receives, the analysis journal (where answers are kept), the checkpoints, `ingest --emit atif`, the
skill folder (SKILL.md, provenance.json, CHANGELOG.md, references/), the CLI's own output, nor
the git history a refresh writes.

The scripted analyst copies the planted line, as it read it, into each lesson's rule and quote,
so a secret that got past redaction would travel into every output; the tests check that the
copies arrive (placeholders and all) and that no secret does."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from trace2skill.analyse import AnalystReport
from trace2skill.cli import app
from trace2skill.consolidate import MergeDecision
from trace2skill.journal import checkpoint_path, journal_path
from trace2skill.redact import Redactor
from trace2skill.testing import ScriptedLLM

from conftest import init_repo
from secret_corpus import BENIGN, CORPUS

runner = CliRunner()
SECRETS = {kind: secrets for kind, (_, secrets) in CORPUS.items()}
RULE_PREFIX = "Do not print this configuration line"


def test_the_corpus_has_at_least_forty_kinds():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_each_kind_is_redacted_in_text(kind):
    line, secrets = CORPUS[kind]
    redactor = Redactor()
    out = redactor.redact_text(line)
    assert not [s for s in secrets if s in out], out
    assert "[REDACTED:" in out and sum(redactor.counts.values()) >= 1
    assert redactor.redact_text(out) == out, "redacting twice changes nothing"


@pytest.mark.parametrize("line", BENIGN)
def test_ordinary_code_and_logs_are_left_alone(line):
    redactor = Redactor()
    assert redactor.redact_text(line) == line and redactor.counts == {}


def echo_analyst(messages, output, purpose):
    """Copies the planted line it was shown into a lesson, as a careless model would."""
    if not purpose.startswith("analyse"):
        return MergeDecision(groups=[], contradictions=[])
    text = messages[-1]["content"]
    number = re.search(r"deploy script number (\d+)", text)
    planted = re.search(r"PLANTED ([^\n]{1,200})", text)
    line = planted.group(1).strip() if planted else "nothing planted"
    n = number.group(1) if number else "x"
    return AnalystReport(lessons=[dict(
        title=f"Configuration leak {n}", rule=f"{RULE_PREFIX} {n}: {line}", when="When deploying.", kind="pitfall",
        subject=f"config-{n}", polarity="avoid", steps=[1], quote=line[:120],
    )])


def plant(folder: Path) -> Path:
    """One OpenAI-chat trajectory per kind (the secret in the command and in its output), and a
    labels file beside the folder; returns the labels file."""
    folder.mkdir(parents=True)
    labels = {}
    for n, kind in enumerate(sorted(CORPUS)):
        line = CORPUS[kind][0]
        trace_id = f"leak-{n:02d}"
        arguments = json.dumps({"command": f"cat deploy.env  # PLANTED {line}"})
        conversation = {"id": trace_id, "messages": [
            {"role": "user", "content": f"Fix the deploy script number {n}."},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "bash", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "c1", "content": f"PLANTED {line}\nerror: deploy failed"},
            {"role": "assistant", "content": "The deploy failed; done."},
        ]}
        (folder / f"{trace_id}.json").write_text(json.dumps(conversation))
        labels[trace_id] = "failure" if n % 2 else "success"
    labels_file = folder.parent / "labels.json"
    labels_file.write_text(json.dumps(labels))
    return labels_file


def leaks(text: str) -> list[str]:
    return sorted(kind for kind, secrets in SECRETS.items() if any(s in text for s in secrets))


def folder_text(folder: Path) -> str:
    """Every byte of every file under `folder` (SQLite databases, WAL files, JSON, Markdown),
    decoded leniently: the journal stores its strings as UTF-8 bytes."""
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(folder.rglob("*")) if p.is_file())


def cached_scripted(llm: ScriptedLLM):
    """The scripted model as the run's client: its answers land in the journal, the one store of paid work."""
    return lambda config: llm


def test_no_secret_reaches_prompts_cache_checkpoints_skill_or_atif(tmp_path):
    labels = plant(tmp_path / "traces")
    llm = ScriptedLLM(echo_analyst)
    out = tmp_path / "skills"
    result = runner.invoke(app, ["distill", str(tmp_path / "traces"), "--out", str(out), "--skill", "leaky", "--model", "scripted",
                                 "--labels", str(labels), "--json"], obj={"llm_factory": cached_scripted(llm)})
    assert result.exit_code == 0, result.output
    prompts = "\n".join(m["content"] for call in llm.calls for m in call.messages)
    assert llm.count("analyse-failure") + llm.count("analyse-success") == len(CORPUS)
    state, skill = tmp_path / ".trace2skill", out / "leaky"
    assert journal_path(checkpoint_path(state)).is_file()
    emitted = tmp_path / "traces.atif.jsonl"
    atif = runner.invoke(app, ["ingest", str(tmp_path / "traces"), "--emit", "atif", str(emitted), "--json"])
    assert atif.exit_code == 0, atif.output
    outputs = {"prompts": prompts, "journal and state": folder_text(state), "skill folder": folder_text(skill),
               "atif": emitted.read_text(), "cli output": result.output + atif.output}
    for name, text in outputs.items():
        assert leaks(text) == [], f"secrets reached the {name}"
    # the copies did arrive, so a secret that escaped redaction would have been caught above
    assert prompts.count("PLANTED") >= len(CORPUS) and outputs["skill folder"].count(RULE_PREFIX) >= len(CORPUS)
    # model lessons need 2 trajectories for SKILL.md, so each single-run planted lesson lands in references/
    assert "[REDACTED:" in outputs["skill folder"] and "[REDACTED:" in outputs["atif"]


def test_no_secret_reaches_git_history_through_a_refresh(tmp_path):
    labels = plant(tmp_path / "traces")
    remote = tmp_path / "remote.git"
    git.Repo.init(remote, bare=True, initial_branch="main")
    repo = init_repo(tmp_path / "repo")
    repo.create_remote("origin", str(remote)).push("main")
    llm = ScriptedLLM(echo_analyst)
    args = ["refresh", str(tmp_path / "traces"), "--skill", "leaky", "--out", str(tmp_path / "repo" / "skills"), "--publish", "branch",
            "--state-dir", str(tmp_path / "state"), "--model", "scripted", "--set", f"analyse.labels={labels}"]
    result = runner.invoke(app, args, obj={"llm_factory": cached_scripted(llm)})
    assert result.exit_code == 0, result.output
    history = subprocess.run(["git", "log", "--all", "-p", "--format=%H%n%B"], cwd=repo.working_tree_dir,
                             capture_output=True, text=True, check=True).stdout
    tags = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(contents)"], cwd=repo.working_tree_dir,
                          capture_output=True, text=True, check=True).stdout
    assert history.count(RULE_PREFIX) >= len(CORPUS), "the planted lines were committed (redacted)"
    for name, text in {"git history": history, "refs and tags": tags, "state": folder_text(tmp_path / "state"),
                       "cli output": result.output}.items():
        assert leaks(text) == [], f"secrets reached the {name}"


def test_keyword_index_without_the_automaton_gives_the_same_answer():
    """`ahocorasick-rs` only makes the keyword pass faster: the substring fallback finds the
    same keywords, on every corpus line and on text where keywords overlap or nest."""
    from trace2skill.redact import _ASSIGNMENTS, _Keywords

    words = sorted({k for rule in Redactor()._rules for k in rule.keywords})
    fast, slow = _Keywords(words, _ASSIGNMENTS), _Keywords(words, _ASSIGNMENTS)
    slow._automaton = None
    assert fast._automaton is not None
    for text in [line for line, _ in CORPUS.values()] + BENIGN + ["sk-ant-sk-SKSK://mysqlcurl", "xoxb-secret_ecret", "PassWORD pwdPWD"]:
        assert fast.scan(text) == slow.scan(text), text
