"""Human- and machine-readable output of the CLI: run summaries, quotes, rule evidence.

Results go to stdout (tables, or JSON with `--json`); quotes and notices go to stderr so a
pipeline reading stdout sees only results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from .types import JSONObject, RunResult, Skip

if TYPE_CHECKING:
    from .budget import Quote
    from .refresh import RefreshOutcome


def print_summary(result: RunResult, *, json_out: bool, dry_run: bool = False,
                  extra: dict | None = None, quiet: bool = False) -> None:
    """The run's summary table (or JSON with `extra` merged in); warnings always, notes and the
    fidelity line unless quiet."""
    if json_out:
        payload = result.model_dump(mode="json")
        payload["dry_run"] = dry_run
        payload.update(extra or {})
        print(json.dumps(payload, indent=2, sort_keys=True))
        return
    console = Console(highlight=False)
    if result.rules_written == 0 and not quiet:
        unlabelled = not result.outcomes.get("success") and not result.outcomes.get("failure")
        hint = "; no trajectory is labelled: give outcomes with --labels (see README)" if unlabelled else ""
        Console(stderr=True, highlight=False).print(
            f"note: no lesson had enough evidence to become a rule{hint}", markup=False)
    table = Table(title=f"trace2skill: {result.skill_dir}", show_header=False, title_justify="left")
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    needs_review = sum(1 for c in result.conflicts if c.status == "needs-review")
    usage = result.usage
    rows = [
        ("mode", f"{result.mode} ({result.model})"),
        ("trajectories", f"{result.traces_read} read ({outcomes}), {len(result.skipped)} skipped, {result.analysed} analysed"),
        ("lessons", f"{result.lessons} after {result.merge_levels} merge level(s)"),
        ("rules written", str(result.rules_written)),
        ("conflicts", f"{len(result.conflicts)} ({needs_review} need review)"),
        ("version", _version_text(result, dry_run)),
        ("tokens", f"{usage.input_tokens} in / {usage.output_tokens} out over {usage.calls} call(s)"),
        ("cost", "n/a (offline)" if result.mode == "offline" else (f"${usage.cost:.4f}" if usage.cost is not None else "unknown (unpriced model)")),
        ("time", f"{result.seconds:.1f} s"),
    ]
    if result.redactions:
        rows.append(("redacted", ", ".join(f"{k} {v}" for k, v in sorted(result.redactions.items()))))
    if result.gate is not None:
        rows.append(("gate", gate_line(result.gate)))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    _print_skips(console, result.skipped)
    if not quiet:
        _print_fidelity_line(result)
    for warning in result.warnings:  # kept under -q: a loss is never silent
        Console(stderr=True, highlight=False).print(f"warning: {warning}", markup=False, soft_wrap=True)


def _print_skips(console: Console, skips: Iterable[Skip]) -> None:
    """One unwrapped line per skip, so a log keeps each path whole and greppable."""
    for skip in skips:
        where = f"{skip.path}" + (f" [{skip.record}]" if skip.record else "")
        console.print(f"skipped: {where}: {skip.reason}", markup=False, soft_wrap=True)


def _version_text(result: RunResult, dry_run: bool) -> str:
    if not result.changed:
        return f"{result.version} (no changes)"
    if result.gate is not None and not result.gate["accepted"]:
        return f"{result.previous_version or 'new'} -> {result.version} refused by the gate: nothing written"
    before = result.previous_version or "new"
    suffix = " (dry run: nothing written)" if dry_run else ""
    return f"{before} -> {result.version}{suffix}"


def print_quote(estimate: Quote) -> None:
    console = Console(stderr=True, highlight=False)
    parts = [f"{s.stage}: {s.calls} call(s), ~{s.input_tokens} in / ~{s.output_tokens} out tokens" for s in estimate.stages]
    cost = f"~${estimate.cost:.4f}" if estimate.cost is not None else "unknown (model not in the price map)"
    console.print(f"quote: {'; '.join(parts)}; cost {cost}", markup=False)


def print_explanation(info: JSONObject, *, json_out: bool, skill_dir: Path | None = None, verbose: bool = False) -> None:
    """Evidence first (trajectory, outcome, steps from 1, quote, then the rule and where it is
    written, with the file's path); lesson ids only with -v, as a count otherwise."""
    if json_out:
        evidence = [{**item, "step_numbers": [step + 1 for step in item["steps"]]} for item in info["evidence"]]
        print(json.dumps({**info, "evidence": evidence}, indent=2, sort_keys=True))
        return
    console = Console(highlight=False)
    console.print(f"{info['id']}: {info['title']}", markup=False)
    console.print(f"evidence: {info['support']} trajectories ({info['failing_support']} failed, "
                  f"{info['succeeding_support']} successful); steps count from 1", markup=False)
    for number, item in enumerate(info["evidence"], 1):
        steps = ", ".join(str(step + 1) for step in item["steps"]) or "-"
        console.print(f"  {number}. {item['trace_id']} ({item['outcome']}), step {steps}", markup=False, soft_wrap=True)
        if item["quote"]:
            console.print(f"     \"{item['quote']}\"", markup=False, soft_wrap=True)
    where = "not written"
    if info.get("file"):
        path = f"{skill_dir}/{info['file']}" if skill_dir is not None else info["file"]
        where = f"{path} > {info['section']}"
    lessons = info["lesson_ids"]
    lines = [
        f"rule:    {info['rule']}",
        f"when:    {info['when']}",
        f"status:  {info['status']}",
        f"file:    {where}",
        f"seen:    first in {info['first_seen_run'] or '?'}, last in {info['last_seen_run'] or '?'}",
        f"lessons: {', '.join(lessons)}" if verbose else f"lessons: {len(lessons)} merged (-v lists their ids)",
    ]
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def print_trace_rules(rows: list[JSONObject], trace_id: str, *, json_out: bool, skill_dir: Path | None = None) -> None:
    """The rules one trajectory supports, with the steps (from 1) and quotes it gave each."""
    if json_out:
        print(json.dumps({"trace_id": trace_id, "rules": rows}, indent=2, sort_keys=True))
        return
    console = Console(highlight=False)
    console.print(f"{trace_id} ({rows[0]['outcome']}) supports {len(rows)} rule(s); steps count from 1", markup=False)
    for number, row in enumerate(rows, 1):
        path = f"{skill_dir}/{row['file']}" if skill_dir is not None else row["file"]
        where = f"{path} > {row['section']}" if row["file"] else row["status"]
        console.print(f"  {number}. {row['id']} {row['title']}", markup=False, soft_wrap=True)
        console.print(f"     step {', '.join(map(str, row['step_numbers'])) or '-'}; {where}", markup=False, soft_wrap=True)
        for quote in row["quotes"][:2]:
            console.print(f"     \"{quote}\"", markup=False, soft_wrap=True)


def print_refresh(outcome: RefreshOutcome, *, json_out: bool, publish: str = "none") -> None:
    """What the refresh did and where it went: commit, branch, remote, pull request."""
    if json_out:
        payload = {
            "skill": outcome.skill, "changed": outcome.changed, "message": outcome.message,
            "new_traces": outcome.new_traces, "commit": outcome.commit, "pr_url": outcome.pr_url,
            "branch": outcome.branch, "remote": outcome.remote, "publish": publish,
            "review": list(outcome.review), "gated": outcome.gated,
            "result": outcome.result.model_dump(mode="json") if outcome.result is not None else None,
        }
        print(json.dumps(payload, indent=2, sort_keys=True))
        return
    console = Console(highlight=False)
    console.print(f"{outcome.skill}: {outcome.message}", markup=False)
    if outcome.commit:
        pushed = f", pushed to {outcome.remote}" if outcome.remote else ", not pushed (no remote)"
        console.print(f"commit {outcome.commit[:12]} on branch {outcome.branch}{pushed}", markup=False)
    elif outcome.changed and publish == "none":
        console.print("written to the working tree only (--publish none): no commit, branch or pull request", markup=False)
    if outcome.pr_url:
        console.print(f"pull request {outcome.pr_url}", markup=False)
    elif outcome.changed and publish in {"gh", "github"}:
        console.print("no pull request opened", markup=False)
    for item in outcome.review:
        console.print(f"needs review: {item}", markup=False)
    if outcome.result is not None and outcome.result.gate is not None:
        console.print(gate_line(outcome.result.gate), markup=False, soft_wrap=True)
    if outcome.result is not None:
        _print_skips(console, outcome.result.skipped)
        _print_fidelity_line(outcome.result)
        for warning in outcome.result.warnings:
            Console(stderr=True, highlight=False).print(f"warning: {warning}", markup=False, soft_wrap=True)


def _print_fidelity_line(result: RunResult) -> None:
    """The one-line fidelity summary of a run, on stderr (files lost from are in the warnings)."""
    if result.fidelity:
        from .ingest.fidelity import summary_line

        Console(stderr=True, highlight=False).print(summary_line(result.fidelity), markup=False, soft_wrap=True)


def print_history(versions: list, *, json_out: bool) -> None:
    rows = [
        {"version": v.version, "tag": v.tag, "commit": v.commit[:12], "date": v.committed_at.isoformat(), "run": v.run_id,
         "rules": v.rules, "added": v.rules_added, "changed": v.rules_changed, "removed": v.rules_removed, "rollback_of": v.rollback_of}
        for v in versions
    ]
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no tagged versions yet (a refresh with --publish branch, gh or github tags each version)")
        return
    table = Table("version", "date", "commit", "run", "rules", "+", "~", "-")
    for row in rows:
        note = f" (rollback of {row['rollback_of']})" if row["rollback_of"] else ""
        table.add_row(row["version"] + note, row["date"][:19], row["commit"], row["run"] or "", str(row["rules"]),
                      str(row["added"]), str(row["changed"]), str(row["removed"]))
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 140)  # a log or pipe keeps whole run ids and dates
    console.print(table)


def print_ingest(report: dict, *, json_out: bool, verbose: bool = False) -> None:
    """Counts, formats and redactions; label files as a count (each one with -v); every skip."""
    if json_out:
        print(json.dumps(report, indent=2, sort_keys=True))
        return
    console = Console(highlight=False)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report["outcomes"].items()))
    formats = ", ".join(f"{k} {v}" for k, v in sorted(report["formats"].items())) or "none"
    console.print(f"read {report['traces']} trajectories ({outcomes}); formats: {formats}; skipped {report['skipped']}", markup=False, soft_wrap=True)
    if report["redactions"]:
        console.print("redacted: " + ", ".join(f"{k} {v}" for k, v in sorted(report["redactions"].items())), markup=False)
    sources = report["label_sources"]
    if verbose or len(sources) <= 3:
        for source in sources:
            console.print(f"labels from {source}", markup=False, soft_wrap=True)
    else:
        console.print(f"labels from {len(sources)} files (e.g. {sources[0]}; -v lists them all)", markup=False, soft_wrap=True)
    for skip in report["skips"]:
        where = skip["path"] + (f" [{skip['record']}]" if skip.get("record") else "")
        console.print(f"skipped: {where}: {skip['reason']}", markup=False, soft_wrap=True)
    print_fidelity(console, report.get("fidelity", []), verbose)


FIDELITY_ROWS = 20
"""Above this many files, `ingest --check` lists only the files not read cleanly (-v: all)."""


def print_fidelity(console: Console, rows: list[dict], verbose: bool = False) -> None:
    """The per-file fidelity table of `ingest --check` (plain columns, never wrapped), then each
    file's ignored and dropped records with their rule or reason, one greppable line each.
    Past `FIDELITY_ROWS` files, clean files are counted instead of listed unless `verbose`."""
    if not rows:
        return
    if not verbose and len(rows) > FIDELITY_ROWS:
        clean = [row for row in rows if row["clean"]]
        rows = [row for row in rows if not row["clean"]]
        console.print(f"{len(clean)} of {len(clean) + len(rows)} files read cleanly (-v lists every file)", markup=False)
        if not rows:
            return
    header = ("file", "format", "version", "records", "steps", "calls read/file", "results read/file",
              "paired", "errors", "ignored", "dropped", "lost")
    table = [header] + [_fidelity_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        console.print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(), markup=False, soft_wrap=True)
    for row in rows:
        for rule, n in row["ignored"].items():
            console.print(f"ignored: {row['file']}: {n} x {rule}", markup=False, soft_wrap=True)
        for reason, n in row["dropped"].items():
            console.print(f"dropped: {row['file']}: {n} x {reason}", markup=False, soft_wrap=True)
        if row["unexplained_calls"] or row["unexplained_results"]:
            hint = " (the dropped records above may hold them)" if row["dropped"] else ""
            console.print(f"lost: {row['file']}: {row['unexplained_calls']} tool call(s) and {row['unexplained_results']} "
                          f"result(s) not read and in no ignored record{hint}", markup=False, soft_wrap=True)


def _fidelity_cells(row: dict) -> tuple[str, ...]:
    counted = row["counted"]
    return (
        row["file"], row["format"] or "-", row["version"] or "-", str(row["records"]) if counted else "?",
        str(row["steps"]), f"{row['calls_read']}/{row['calls_in_file'] if counted else '?'}",
        f"{row['results_read']}/{row['results_in_file'] if counted else '?'}", str(row["results_paired"]),
        str(row["errors"]), str(sum(row["ignored"].values())), str(sum(row["dropped"].values())),
        str(row["unexplained_calls"] + row["unexplained_results"]),
    )


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def print_eval(report: dict, *, json_out: bool) -> None:
    """The held-out evaluation: pooled figures, one row per fold, per-rule hits, the learning curve."""
    if json_out:
        print(json.dumps(report, indent=2, sort_keys=True))
        return
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)
    console.print(f"held-out evaluation: {report['trajectories']} trajectories, {report['tasks']} tasks, "
                  f"{report['k']} folds split by task", markup=False)
    table = Table("fold", "tasks", "training", "rules", "failures covered", "coverage", "successes flagged", "false alarms",
                  title="held-out figures", title_justify="left")
    for fold in report["folds"]:
        table.add_row(str(fold["fold"]), str(fold["tasks"]), str(fold["training_trajectories"]), str(fold["rules"]),
                      f"{fold['covered_failures']}/{fold['heldout_failures']}", _share(fold["heldout_failure_coverage"]),
                      f"{fold['flagged_successes']}/{fold['heldout_successes']}", _share(fold["false_alarm_rate"]))
    table.add_row("all", str(report["tasks"]), "", "", f"{report['covered_failures']}/{report['heldout_failures']}",
                  _share(report["heldout_failure_coverage"]), f"{report['flagged_successes']}/{report['heldout_successes']}",
                  _share(report["false_alarm_rate"]), style="bold")
    for kind, row in report.get("by_kind", {}).items():
        table.add_row(f"{kind} rules", "", "", str(row["rules"]), "", _share(row["heldout_failure_coverage"]), "",
                      _share(row["false_alarm_rate"]))
    console.print(table)
    rules = Table("rule", "title", "failures hit", "successes flagged", title="per-rule held-out hits", title_justify="left")
    failures, successes = max(1, report["heldout_failures"]), max(1, report["heldout_successes"])
    for rid, row in sorted(report["rule_hits"].items(), key=lambda kv: (-kv[1]["heldout_hits"], kv[1]["false_alarms"], kv[0])):
        rules.add_row(rid, row["title"], f"{row['heldout_hits']} ({row['heldout_hits'] / failures:.0%})",
                      f"{row['false_alarms']} ({row['false_alarms'] / successes:.0%})")
    console.print(rules)
    curve = Table("share of training folds", "training trajectories", "coverage", "false alarms",
                  title="learning curve", title_justify="left")
    for point in report["learning_curve"]:
        curve.add_row(f"{point['share']:.0%}", f"{point['training_trajectories']:g}",
                      _share(point["heldout_failure_coverage"]), _share(point["false_alarm_rate"]))
    console.print(curve)
    console.print(f"learning curve plot: {report['plot']}", markup=False)
    for skip in report.get("skipped", []):
        where = skip["path"] + (f" [{skip['record']}]" if skip.get("record") else "")
        console.print(f"skipped: {where}: {skip['reason']}", markup=False, soft_wrap=True)


def gate_line(gate: dict) -> str:
    """One line for the run summary: the decision, both scores and the command."""
    if gate["kind"] == "heldout":
        scores = (f"coverage {_share(gate['current'])} -> {_share(gate['candidate'])}, "
                  f"false alarms {_share(gate['current_false_alarm'])} -> {_share(gate['candidate_false_alarm'])}")
    else:
        current = "n/a" if gate["current"] is None else f"{gate['current']:g}"
        scores = f"benchmark {current} (current) -> {gate['candidate']:g} (candidate), command {gate['command']!r}"
    verdict = "passed" if gate["accepted"] else "REFUSED"
    kept = f"; candidate kept in {gate['kept_at']}" if gate.get("kept_at") else ""
    line = f"{gate['kind']} gate {verdict}: {scores}; {gate['reason']}{kept}"
    for effect in gate.get("ablation", []):
        mark = " (no or negative effect)" if effect["no_effect"] else ""
        line += f"\n  without {effect['rule_id']} {effect['title']!r}: {effect['score_without']:g} (effect {effect['effect']:+g}){mark}"
    return line
