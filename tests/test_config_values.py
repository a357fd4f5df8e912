"""Bad configuration values stop the real CLI at load time with exit 78 and the key's name,
wherever they come from: flags, `--set`, `TRACE2SKILL_*` variables or the TOML file."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from trace2skill.cli import app
from trace2skill.config import load_config

from conftest import ROOT

runner = CliRunner()

BAD = [
    # (how, value, the key the message must name)
    (["--concurrency", "-1"], None, "analyse.concurrency"),
    (["--concurrency", "5000"], None, "analyse.concurrency"),
    (["--budget", "-1"], None, "budget.max_cost"),
    (["--budget", "nan"], None, "budget.max_cost"),
    (["--max-calls", "0"], None, "budget.max_calls"),
    (["--max-calls", "-2"], None, "budget.max_calls"),
    (["--success-threshold", "nan"], None, "analyse.success_threshold"),
    (["--fan-in", "100000"], None, "consolidate.fan_in"),
    (["--set", "llm.timeout=-5"], None, "llm.timeout"),
    (["--set", "llm.timeout=0"], None, "llm.timeout"),
    (["--set", "analyse.concurrency=true"], None, "analyse.concurrency"),
    (["--set", "budget.max_calls=0"], None, "budget.max_calls"),
    (["--set", "analyse.success_threshold=NaN"], None, "analyse.success_threshold"),
    (["--set", "budget.approve_above=inf"], None, "budget.approve_above"),
    (["--set", "llm.temperature=-0.5"], None, "llm.temperature"),
    (["--set", "ingest.max_ratio=0"], None, "ingest.max_ratio"),
    ([], {"TRACE2SKILL_LLM__TIMEOUT": "-1"}, "llm.timeout"),
    ([], {"TRACE2SKILL_CONCURRENCY": "true"}, "analyse.concurrency"),
    ([], {"TRACE2SKILL_CONCURRENCY": "100000"}, "analyse.concurrency"),
    ([], {"TRACE2SKILL_BUDGET__MAX_COST": "-0.5"}, "budget.max_cost"),
    ([], {"TRACE2SKILL_ANALYSE__SUCCESS_THRESHOLD": "nan"}, "analyse.success_threshold"),
    ([], {"TRACE2SKILL_BUDGET__MAX_CALLS": "0"}, "budget.max_calls"),
    ("[analyse]\nconcurrency = true\n", None, "analyse.concurrency"),
    ("[analyse]\nconcurrency = 100000\n", None, "analyse.concurrency"),
    ("[analyse]\nsuccess_threshold = nan\n", None, "analyse.success_threshold"),
    ("[llm]\ntimeout = -1.0\n", None, "llm.timeout"),
    ("[llm]\nnum_retries = -1\n", None, "llm.num_retries"),
    ("[budget]\nmax_calls = 0\n", None, "budget.max_calls"),
    ("[budget]\nmax_cost = -3\n", None, "budget.max_cost"),
    ("[budget]\nmax_cost = true\n", None, "budget.max_cost"),
    ("[consolidate]\nmin_support = false\n", None, "consolidate.min_support"),
]


@pytest.mark.parametrize("how,env,key", BAD, ids=[f"{i}-{case[2]}" for i, case in enumerate(BAD)])
def test_bad_values_exit_78_naming_the_key(tmp_path, how, env, key):
    args = ["distill", str(tmp_path / "no-traces-here"), "--out", str(tmp_path / "skills")]
    if isinstance(how, str):
        (tmp_path / "trace2skill.toml").write_text(how)
    else:
        args += how
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 78, result.output
    assert f"{key}: " in result.output and "Traceback" not in result.output
    if env:
        assert f"(set by {next(iter(env))})" in result.output


def test_the_same_command_with_good_values_gets_past_the_config(tmp_path):
    """Guards the test above: a valid configuration reaches ingest (no input: 66, not 78)."""
    (tmp_path / "trace2skill.toml").write_text("[analyse]\nconcurrency = 8\n[llm]\ntimeout = 30\n")
    args = ["distill", str(tmp_path / "no-traces-here"), "--out", str(tmp_path / "s"), "--budget", "0", "--max-calls", "1",
            "--set", "analyse.success_threshold=0.5", "--concurrency", "1024"]
    result = runner.invoke(app, args, env={"TRACE2SKILL_LLM__TIMEOUT": "2.5"})
    assert result.exit_code == 66, result.output


def test_numbers_from_strings_still_load(tmp_path):
    config = load_config(overrides={"analyse.concurrency": "8", "llm.timeout": "2.5", "budget.max_calls": "3"},
                         env={"TRACE2SKILL_LLM__CACHE": "false"}, cwd=tmp_path)
    assert (config.analyse.concurrency, config.llm.timeout, config.budget.max_calls, config.llm.cache) == (8, 2.5, 3, False)


def test_a_boolean_concurrency_in_the_file_is_refused_by_the_installed_command(tmp_path):
    (tmp_path / "trace2skill.toml").write_text("[analyse]\nconcurrency = true\n")
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "ingest", str(tmp_path)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert run.returncode == 78 and "analyse.concurrency: expected a number, got the boolean true" in run.stderr
