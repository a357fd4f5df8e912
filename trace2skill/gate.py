"""The gate: a candidate skill is written or published only when it is not worse than the current one.

    distil (candidate in memory) -> gate -> write and publish, or keep under the state folder

* `heldout`: the trajectories the current skill has not seen are split into folds by task; the
  candidate is distilled (deepening the current skill, in memory) from all but one fold and scored
  on that fold, and the current skill is scored on the same trajectories (`evaluate`). The
  candidate is refused when its held-out failure coverage falls below the current skill's by more
  than `gate.tolerance`, or its false-alarm rate rises above it by more than the tolerance.
* `command`: the user's benchmark runs once with the current skill and once with the candidate,
  the folder in `TRACE2SKILL_SKILL_DIR` (empty for "no skill"); the last line of its stdout is
  the score, higher is better. A candidate scoring lower than current by more than the tolerance
  is refused. `gate.ablate = N` then scores the candidate without each of its N newest or weakest
  rules; a rule whose removal does not lower the score is marked.

Either way the decision, both scores and the command go into provenance.json (and, from there,
the run summary and the pull-request body); a refused candidate is kept in
`STATE/gate/<run id>/<skill>` for inspection. Everything the gate writes is inside the state folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from collections.abc import Callable

from .author import SkillBuild
from .budget import PROMPT_OVERHEAD_TOKENS, Quote, StageQuote
from .config import Config
from .errors import GateError, StateError
from .evaluate import Distil, written_rules
from .llm import LLMClient
from .skillfmt.markers import RULE_MARKER
from .skill import write_skill_dir
from .stream import Corpus, IndexEntry, reread
from .types import JSONObject

ENV_VAR = "TRACE2SKILL_SKILL_DIR"


@dataclass(frozen=True)
class RuleEffect:
    rule_id: str
    title: str
    score_without: float
    effect: float
    """Candidate score minus the score without this rule: positive means the rule helps."""
    no_effect: bool
    """True when removing the rule did not lower the score (no or negative effect)."""


@dataclass(frozen=True)
class GateDecision:
    kind: str
    """`heldout` or `command`."""
    accepted: bool
    reason: str
    tolerance: float
    current: float | None
    """Current skill's score: held-out failure coverage, or the benchmark's number."""
    candidate: float | None
    command: str | None = None
    current_false_alarm: float | None = None
    candidate_false_alarm: float | None = None
    heldout: JSONObject = field(default_factory=dict)
    """Held-out counts behind the figures (trajectories, folds, failures, successes)."""
    ablation: tuple[RuleEffect, ...] = ()
    kept_at: str | None = None
    """Where a refused candidate was kept."""

    def as_dict(self) -> JSONObject:
        data = asdict(self)
        data["ablation"] = [asdict(effect) for effect in self.ablation]
        return data


def run_gate(distil: Distil, config: Config, llm: LLMClient | None, build: SkillBuild, corpus: Corpus,
             run_id: str) -> tuple[SkillBuild, JSONObject]:
    """Judge the candidate `build`; return it with the decision recorded in its provenance.json.

    `distil` is `pipeline.distill` (the held-out gate distils folds with it), passed in by the
    pipeline that runs the gate, so this module does not import it back. `corpus` is the run's
    index: the held-out gate reads its folds' traces again, a batch at a time.

    A refused candidate is written to the state folder (never to the skill folder).

    Raises:
        GateError: the benchmark command failed or printed no number.
    """
    workdir = _fresh_dir(config.state_dir, run_id)
    if config.gate.mode == "command":
        decision = command_gate(config, build, workdir)
    else:
        decision = heldout_gate(distil, config, llm, corpus)
    if not decision.accepted:
        kept = workdir / config.skill.name
        decision = replace(decision, kept_at=str(kept))
        build = recorded(build, decision)
        _stage_candidate(config, build, kept)
    else:
        build = recorded(build, decision)
        shutil.rmtree(workdir)
    return build, decision.as_dict()


def recorded(build: SkillBuild, decision: GateDecision) -> SkillBuild:
    """The build with `gate` set in its provenance.json (same formatting as `dump_provenance`)."""
    data = json.loads(build.files["provenance.json"])
    data["gate"] = decision.as_dict()
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    kept = build.provenance.model_copy(update={"gate": data["gate"]}) if build.provenance is not None else None
    return replace(build, files={**build.files, "provenance.json": text}, provenance=kept)


# --------------------------------------------------------------------------------------------
# Held-out comparison


def heldout_gate(distil: Distil, config: Config, llm: LLMClient | None, corpus: Corpus) -> GateDecision:
    """Score the current skill and, fold by fold, a candidate distilled without that fold, on the
    held-out trajectories. Each fold's distil streams its trajectories like any run; each held-out
    trajectory is read once and scored with both rule sets (the current skill's scores are the
    sum over the folds, which cover the pool once)."""
    from .evaluate import Scorer, Scores, distil_rules

    tolerance = config.gate.tolerance
    current_text, pool, folds = heldout_split(config, corpus)
    if current_text is None:
        return GateDecision("heldout", True, "no current skill to compare with", tolerance, None, None)
    if len(folds) < 2:
        return GateDecision("heldout", False, f"held-out comparison needs labelled trajectories of at least 2 tasks "
                            f"the current skill has not seen; found {len(folds) if pool else 0}", tolerance, None, None)
    scorer = Scorer(config, llm)
    rules_now = written_rules(current_text)
    current, candidate = Scores(), Scores()
    for heldout in folds:
        held = {e.id for e in heldout}
        rules, _ = distil_rules(distil, config, llm, corpus.subset(lambda e: e.id not in held), from_scratch=False)
        fold_now, fold_new = scorer.scores([rules_now, rules], reread(corpus.subset(lambda e: e.id in held), config))
        current, candidate = current + fold_now, candidate + fold_new
    worse = _worse(current.coverage, candidate.coverage, current.false_alarm_rate, candidate.false_alarm_rate, tolerance)
    counts = {"trajectories": len(pool), "folds": len(folds), "failures": current.failures, "successes": current.successes}
    return GateDecision("heldout", not worse, worse or "candidate is no worse on held-out trajectories", tolerance,
                        current.coverage, candidate.coverage, None, current.false_alarm_rate,
                        candidate.false_alarm_rate, counts)


def heldout_split(config: Config, corpus: Corpus) -> tuple[str | None, list[IndexEntry], list[list[IndexEntry]]]:
    """The current skill's provenance.json text (None: no skill), the labelled trajectories it has
    not seen (the held-out pool, as index entries) and their folds by task."""
    from .evaluate import split_folds

    current_text = _read(config.skill_dir() / "provenance.json")
    if current_text is None:
        return None, [], []
    seen = _seen_ids(current_text)
    pool = [e for e in corpus.entries if e.id not in seen and e.outcome in ("success", "failure")]
    if any(not e.task_id for e in pool):
        raise ValueError("the corpus was indexed without task ids (ShardJob.task_ids); the held-out gate needs them")
    return current_text, pool, split_folds(pool, config.gate.folds, task=lambda e: e.task_id) if pool else []


JUDGE_OUTPUT_TOKENS = 300
RULE_LISTING_TOKENS = 80
"""Prompt tokens the quote assumes per listed rule in a judge call (id, title, rule, when)."""


def quote_heldout(config: Config, corpus: Corpus, fold_quote: Callable[[Corpus], Quote | None],
                  price: tuple[float, float] | None) -> Quote | None:
    """The model spend of the held-out gate, said before it runs (None when it makes no call),
    from the run's index: no trajectory is read for it.

    Each fold's distil is quoted by `fold_quote` (the pipeline's own quote of that run, so work
    its journal holds is not counted); the judge makes one call per held-out trajectory for the
    current skill and one for each fold's candidate (counted in full: the candidate's rules are
    not known before it is built), each with the trajectory's estimated prompt tokens.
    """
    current_text, pool, folds = heldout_split(config, corpus)
    if current_text is None or len(folds) < 2:
        return None
    stages: dict[str, list[int]] = {}
    for heldout in folds:
        held = {e.id for e in heldout}
        quoted = fold_quote(corpus.subset(lambda e: e.id not in held))
        for stage in quoted.stages if quoted is not None else ():
            if stage.stage != "preflight":
                totals = stages.setdefault(f"gate-{stage.stage}", [0, 0, 0])
                totals[0], totals[1], totals[2] = totals[0] + stage.calls, totals[1] + stage.input_tokens, totals[2] + stage.output_tokens
    rules = len(written_rules(current_text))
    budget = config.analyse.token_budget
    per_trace = [min(budget, e.tokens) for e in pool]
    judged = (2 if rules else 1) * len(pool)
    judge_in = sum(per_trace) * judged // len(pool) + judged * (PROMPT_OVERHEAD_TOKENS + max(rules, 1) * RULE_LISTING_TOKENS)
    stages["gate-judge"] = [judged, judge_in, judged * JUDGE_OUTPUT_TOKENS]
    quoted_stages = tuple(StageQuote(name, *values) for name, values in stages.items())
    cost = None if price is None else sum(q.input_tokens * price[0] + q.output_tokens * price[1] for q in quoted_stages)
    return Quote(stages=quoted_stages, cost=cost)


def _worse(cov_now: float | None, cov_new: float | None, far_now: float | None, far_new: float | None,
           tolerance: float) -> str:
    """Why the candidate is worse, or "" (a figure with no trajectories behind it is not compared)."""
    reasons = []
    if cov_now is not None and cov_new is not None and cov_new < cov_now - tolerance - 1e-9:
        reasons.append(f"held-out failure coverage falls from {cov_now:.1%} to {cov_new:.1%}")
    if far_now is not None and far_new is not None and far_new > far_now + tolerance + 1e-9:
        reasons.append(f"false-alarm rate rises from {far_now:.1%} to {far_new:.1%}")
    return "; ".join(reasons) + (f" (tolerance {tolerance:g})" if reasons else "")


def _seen_ids(provenance_text: str) -> set[str]:
    """Trajectories the current skill was built from: its last run's and every rule's evidence."""
    data = json.loads(provenance_text)
    seen = set((data.get("run") or {}).get("trace_outcomes") or {})
    for table in ("rules", "withheld"):
        for record in (data.get(table) or {}).values():
            seen |= {e.get("trace_id") for e in record.get("evidence", []) if isinstance(e, dict)}
    return seen


# --------------------------------------------------------------------------------------------
# The user's benchmark


def command_gate(config: Config, build: SkillBuild, workdir: Path) -> GateDecision:
    command, tolerance = config.gate.command or "", config.gate.tolerance
    current_dir = config.skill_dir() if (config.skill_dir() / "SKILL.md").is_file() else None
    candidate_dir = workdir / "candidate" / config.skill.name
    _stage_candidate(config, build, candidate_dir)
    current = run_benchmark(command, current_dir, config.gate.timeout)
    candidate = run_benchmark(command, candidate_dir, config.gate.timeout)
    ablation = tuple(ablate(config, build, candidate, workdir)) if config.gate.ablate else ()
    accepted = candidate >= current - tolerance - 1e-9
    reason = (f"benchmark scores the candidate {candidate:g} against {current:g} for the "
              f"{'current skill' if current_dir else 'no-skill baseline'} (tolerance {tolerance:g})")
    return GateDecision("command", accepted, reason, tolerance, current, candidate, command, ablation=ablation)


def run_benchmark(command: str, skill_dir: Path | None, timeout: float | None) -> float:
    """Run the benchmark once with `skill_dir` (None: no skill) and return its score.

    Raises:
        GateError: non-zero exit, timeout, or a last stdout line that is not a number.
    """
    # The child inherits the user's environment, as any command they run would; only our variable is added.
    env = {**os.environ, ENV_VAR: str(skill_dir.resolve()) if skill_dir is not None else ""}
    try:
        done = subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GateError(f"benchmark {command!r} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [""])[-1]
        raise GateError(f"benchmark {command!r} exited with status {done.returncode}" + (f": {tail}" if tail else ""))
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    try:
        return float(lines[-1])
    except (IndexError, ValueError):
        shown = lines[-1][:80] if lines else "nothing"
        raise GateError(f"benchmark {command!r} must print a number on its last stdout line; it printed {shown!r}") from None


def ablate(config: Config, build: SkillBuild, full_score: float, workdir: Path) -> list[RuleEffect]:
    """Score the candidate without each of its `gate.ablate` newest (added in this build) or
    weakest (least support) rules, one at a time."""
    from .provenance import load_provenance

    rules = load_provenance(build.files["provenance.json"]).rules
    added = set(build.added)
    order = sorted(rules.values(), key=lambda r: (r.id not in added, r.support, r.failing_support, r.id))
    effects = []
    for record in order[: config.gate.ablate]:
        variant = workdir / "ablate" / record.id / config.skill.name
        _stage_candidate(config, replace(build, files=without_rule(build.files, record.id)), variant, validate=False)
        score = run_benchmark(config.gate.command or "", variant, config.gate.timeout)
        effect = round(full_score - score, 6)
        effects.append(RuleEffect(record.id, record.title, score, effect, effect <= 0))
    return effects


def without_rule(files: dict[str, str], rule_id: str) -> dict[str, str]:
    """The skill's files with the bullet of `rule_id` removed from every Markdown file."""
    out = {}
    for name, text in files.items():
        if name.endswith(".md"):
            lines = text.splitlines(keepends=True)
            text = "".join(line for line in lines if not ((m := RULE_MARKER.search(line.rstrip("\n"))) and m["id"] == rule_id))
        out[name] = text
    return out


# --------------------------------------------------------------------------------------------
# Folders under the state folder


def _stage_candidate(config: Config, build: SkillBuild, target: Path, validate: bool = True) -> None:
    """Write the candidate as a complete skill folder: the current folder's other files, then the build's."""
    current = config.skill_dir()
    if current.is_dir() and not target.exists():
        shutil.copytree(current, target, symlinks=True)
    write_skill_dir(target, build.files, validate=validate)


def _fresh_dir(state_dir: Path, run_id: str) -> Path:
    """`STATE/gate/<run id>`, emptied: only a real folder inside the state folder is ever removed."""
    root = (state_dir / "gate").resolve()
    path = root / run_id
    if path.is_symlink() or (path.exists() and not path.resolve().is_relative_to(root)):
        raise StateError(f"{str(path)!r} is a link; refusing to use it as the gate's work folder")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def quote_runs(config: Config) -> str:
    """The benchmark runs a command gate will make, said before any of them starts."""
    if config.gate.mode != "command":
        return ""
    extra = f" + up to {config.gate.ablate} ablation run(s)" if config.gate.ablate else ""
    return f"gate: 2 benchmark runs (current skill, candidate){extra} of {config.gate.command!r}"
