"""One configuration object, built once at the edge and passed down.

Precedence, highest first: CLI flags (`overrides`), `TRACE2SKILL_*` environment variables,
the TOML file (`trace2skill.toml`, or `[tool.trace2skill]` in `pyproject.toml`), defaults.
This is the only module that reads `os.environ`, and only when `load_config` is called.
API keys are never read here: providers read their own variables.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .types import JSONValue

ConfigValue = JSONValue | Path
"""A value for one config key from a flag, `--set` or an override: what TOML or JSON can hold, or a path."""

ENV_PREFIX = "TRACE2SKILL_"
OFFLINE_MODEL = "offline"


MAX_CONCURRENCY = 1024
"""More parallel analysts than this is a typo, not a plan (each holds a trajectory in memory)."""


def _not_a_boolean(value: Any) -> Any:
    """`concurrency = true` would otherwise be read as 1: a number field takes numbers only."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]
"""Numbers from TOML, environment variables (`"4"`) and flags; never booleans, never NaN or
infinity (`allow_inf_nan=False` below), so a bad value stops the run at load time (exit 78)
instead of failing later with the wrong exit code."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True, allow_inf_nan=False)


class RateLimit(_Section):
    requests: int | None = Field(default=None, ge=1)
    """Most requests sent per minute."""
    tokens: int | None = Field(default=None, ge=1)
    """Most prompt tokens (estimated) sent per minute."""


class LLMConfig(_Section):
    model: str = OFFLINE_MODEL
    """litellm model string (`openai/gpt-4.1-mini`, `ollama_chat/qwen3`), `offline` for the LLM-free analyst, or `scripted` in tests."""
    api_base: str | None = None
    """Base URL of a local OpenAI-compatible server (ollama, vLLM, llama.cpp)."""
    api_key_env: str | None = None
    """Environment variable whose value is sent as the key to `api_base`. An `api_base` read from a
    configuration file gets a key only when the same file names this variable."""
    client: Literal["auto", "litellm"] = "auto"
    """How requests travel. `auto`: an `openai/` model with an `api_base` is sent straight to that
    server (one HTTP request each, no litellm, whose import takes seconds and each request about
    10 ms of CPU), any other model through litellm. `litellm`: always through litellm."""
    structured: Literal["json_schema", "tool", "json"] = "json_schema"
    """How replies are constrained: a JSON schema, a forced tool call, or plain JSON mode (schema in the prompt)."""
    price_in: float | None = Field(default=None, ge=0)
    """US dollars per million input tokens, for models whose price litellm does not know."""
    price_out: float | None = Field(default=None, ge=0)
    """US dollars per million output tokens, for models whose price litellm does not know."""
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    """Requests and tokens per minute this run may send (unset: no limit)."""
    min_support: int = Field(default=2, ge=1)
    """Distinct tasks a model-written lesson needs before it may enter SKILL.md."""
    _api_base_from_file: bool = PrivateAttr(default=False)
    """True when `api_base` was read from a configuration file (set by `load_config`, never by a file)."""
    timeout: Float = Field(default=120.0, gt=0)
    """Seconds allowed for one model call."""
    num_retries: Int = Field(default=2, ge=0, le=100)
    """Retries per request on rate limits, timeouts, connection errors and 5xx (never on key, permission or bad-request errors)."""
    temperature: Float | None = Field(default=None, ge=0)
    """Sent only when set; the provider's default applies otherwise."""
    seed: Int | None = None
    """Sent only when set; part of the response-cache key."""
    max_tokens: Int | None = Field(default=None, ge=1)
    """Most output tokens one reply may use. Always sent, and reserved against `--budget` before each
    request; unset: 2048 (512 for `llamacpp/` models)."""
    cache: bool = True
    """Reuse the journal of successful analyses and merges of the same run id (inputs, model, sampling, prompts)."""


class AnalyseConfig(_Section):
    concurrency: Int = Field(default=4, ge=1, le=MAX_CONCURRENCY)
    """How many analysts run at once."""
    token_budget: Int = Field(default=6000, ge=500)
    """Tokens of trajectory text an analyst prompt may carry; longer ones are compressed."""
    format: str | None = None
    """Force a trace reader instead of detecting the format by shape."""
    labels: Path | None = None
    """JSON or CSV file mapping trajectory ids to outcomes."""
    success_threshold: Float = 1.0
    """A reward at or above this counts as success."""
    sidechains: Literal["keep", "drop"] = "keep"
    """Claude Code sub-agent conversations: kept apart in `extra` (`keep`) or dropped."""
    executor: Literal["local", "process", "ray"] = "local"
    """Where the map stage (read and analyse each trajectory) runs: this process, worker processes, or Ray. With a model,
    `local` and `process` both read and prepare prompts in worker processes, and send requests from this one."""
    workers: Int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    """Worker processes (or Ray tasks at once) of the map stage; the offline analyst is CPU-bound. Unset: 1, except with
    a model and the `local` or `process` executor: one per CPU core, which read and prepare prompts while this process
    sends requests."""
    ray_address: str | None = None
    """Ray cluster to join (`auto`, `ray://HOST:PORT`); unset starts a local Ray."""


class ConsolidateConfig(_Section):
    fan_in: Int = Field(default=5, ge=2, le=MAX_CONCURRENCY)
    """How many lesson sets one merge combines."""
    min_support: Int = Field(default=1, ge=1)
    """Trajectories a lesson needs before it may enter SKILL.md."""
    below_support: Literal["reference", "drop"] = "reference"
    """Where lessons under `min_support` go."""


class SkillConfig(_Section):
    name: str = "agent-lessons"
    """Skill (and folder) name: lowercase letters, digits and single hyphens."""
    out: Path = Path("skills_out")
    """Folder that holds skill folders (with the `agents` or `claude` layout and `out` unset: the current folder)."""
    layout: Literal["flat", "agents", "claude"] = "flat"
    """`flat`: OUT/NAME; `agents`: OUT/.agents/skills/NAME; `claude`: OUT/.claude/skills/NAME."""
    description: str | None = None
    """Frontmatter description for a new skill; derived from the traces when unset."""

    @field_validator("name")
    @classmethod
    def _valid_skill_name(cls, name: str) -> str:
        """Checked here, before any work, with the rules of the Agent Skills spec (skills-ref)."""
        if not (0 < len(name) <= 64 and name == name.lower() and all(c.isalnum() or c == "-" for c in name)
                and not name.startswith("-") and not name.endswith("-") and "--" not in name):
            raise ValueError(f"{name!r} is not a valid skill name: use at most 64 lowercase letters, digits "
                             "and single hyphens, e.g. 'my-skill'")
        return name


class IngestConfig(_Section):
    max_record_bytes: Int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest single JSON file, or single JSONL line, that is parsed; larger ones are skipped."""
    max_file_bytes: Int = Field(default=4 * 1024 * 1024 * 1024, ge=1024)
    """Largest file read, and the most one `.gz` file or zip member may expand to."""
    shard_bytes: Int = Field(default=64 * 1024 * 1024, ge=1024)
    """A plain JSONL file larger than this, whose lines are trajectories on their own, is cut into
    byte ranges of about this size, read as separate shards (by `--workers` / Ray workers)."""
    max_ratio: Int = Field(default=200, ge=1)
    """Most a `.gz` file or zip member may expand relative to its compressed size (zip bombs);
    anything may expand to 16 MiB. Real trajectories compress 3 to 25 times."""


class RedactConfig(_Section):
    emails: bool = False
    """Also replace e-mail addresses."""
    patterns: list[str] = Field(default_factory=list)
    """Extra regular expressions to redact."""


class BudgetConfig(_Section):
    max_calls: Int | None = Field(default=None, ge=1)
    """Hard cap on model calls in one run."""
    max_cost: Float | None = Field(default=None, ge=0)
    """Hard cap on spend (US dollars) in one run."""
    approve_above: Float | None = Field(default=None, ge=0)
    """A run quoted above this many dollars needs `--yes` (or `budget.approved = true`)."""
    approved: bool = False
    """Approve a run whose quote is above `approve_above`."""


class PublishConfig(_Section):
    mode: Literal["none", "branch", "gh", "github"] = "none"
    """How a refresh publishes: nothing, a commit on the bot branch, or a PR via gh / GitHub REST."""
    repo: Path | None = None
    """Git repository holding the skills; defaults to the one containing the skill folder."""
    base: str | None = None
    """Branch pull requests target; by default the remote's HEAD branch (`main`, `master`, ...)."""
    remote: str = "origin"
    """Remote the bot branch is pushed to."""
    repository: str | None = None
    """`OWNER/NAME` on GitHub; derived from the remote's URL when unset."""
    api_url: str = "https://api.github.com"
    """GitHub REST endpoint (GitHub Enterprise servers have their own)."""
    gh: str = "gh"
    """The GitHub CLI executable used by `--publish gh`."""
    run_hooks: bool = True
    """Run the repository's pre-commit and commit-msg hooks on bot commits."""
    token: str | None = Field(default=None, exclude=True, repr=False)
    """GitHub token, read only from `GITHUB_TOKEN` or `GH_TOKEN`; never written anywhere."""


class GateConfig(_Section):
    mode: Literal["none", "heldout", "command"] = "none"
    """What a candidate skill must pass before `distill` writes it or `refresh` publishes it:
    nothing, held-out coverage and false-alarm rate no worse than the current skill's, or the
    user's benchmark `command` scoring it no lower than the current skill."""
    command: str | None = None
    """Benchmark shell command (setting it selects `mode = "command"`): run with the skill folder
    in `TRACE2SKILL_SKILL_DIR` (empty for no skill); the last line of stdout is a number, higher is better."""
    tolerance: float = Field(default=0.0, ge=0)
    """How much worse a candidate may be: in coverage and false-alarm shares (heldout), or in the benchmark's units."""
    folds: int = Field(default=4, ge=2)
    """Folds of the held-out comparison (by task)."""
    ablate: int = Field(default=0, ge=0)
    """With a command: also score the candidate without each of its N newest or weakest rules."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds one benchmark run may take."""
    max_runs: int | None = Field(default=None, ge=2)
    """Refuse, before any work, a gate quoted at more benchmark runs than this."""

    @model_validator(mode="after")
    def _consistent(self) -> "GateConfig":
        if self.command and self.mode == "none":
            self.mode = "command"
        if self.mode == "command" and not (self.command or "").strip():
            raise ValueError("gate.mode 'command' needs gate.command (--gate-cmd CMD)")
        if self.ablate and self.mode != "command":
            raise ValueError("gate.ablate (--ablate) needs a benchmark command (--gate-cmd CMD)")
        if self.max_runs is not None and self.mode == "command" and self.runs() > self.max_runs:
            raise ValueError(f"the gate is quoted at {self.runs()} benchmark runs, above gate.max_runs {self.max_runs}")
        return self

    def runs(self) -> int:
        """Benchmark runs a command gate makes at most: current, candidate, one per ablated rule."""
        return 2 + self.ablate if self.mode == "command" else 0


class Config(_Section):
    sources: list[str] = Field(default_factory=list)
    """Trace files or folders used when none are given on the command line."""
    state_dir: Path = Path(".trace2skill")
    """Run state: checkpoints, response cache, refresh watermark, lock."""
    llm: LLMConfig = Field(default_factory=LLMConfig)
    analyse: AnalyseConfig = Field(default_factory=AnalyseConfig)
    consolidate: ConsolidateConfig = Field(default_factory=ConsolidateConfig)
    skill: SkillConfig = Field(default_factory=SkillConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    redact: RedactConfig = Field(default_factory=RedactConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    gate: GateConfig = Field(default_factory=GateConfig)

    @property
    def offline(self) -> bool:
        return self.llm.model == OFFLINE_MODEL

    def skill_dir(self) -> Path:
        """Where the skill folder is. With the `agents` or `claude` layout and no `skill.out`
        set, OUT is the current folder, so the skill lands where agents load project skills."""
        base = self.skill.out if self.skill.layout == "flat" or "out" in self.skill.model_fields_set else Path(".")
        if self.skill.layout == "agents":
            base = base / ".agents" / "skills"
        elif self.skill.layout == "claude":
            base = base / ".claude" / "skills"
        return base / self.skill.name


_SHORT_ENV = {"MODEL": "llm.model", "API_BASE": "llm.api_base", "CONCURRENCY": "analyse.concurrency"}


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, ConfigValue] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Build the run's `Config` from defaults, file, environment and flags.

    Args:
        path: explicit TOML file; when None, `trace2skill.toml` or `pyproject.toml` in `cwd`.
        overrides: dotted keys (`llm.model`) from CLI flags; None values are ignored.
        env: environment to read (defaults to `os.environ`).
        cwd: folder searched for config files (defaults to the current directory).

    Raises:
        ConfigError: unreadable file, unknown key or invalid value.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = _read_file(path, cwd or Path.cwd())
    file_llm = data.get("llm") if isinstance(data.get("llm"), dict) else {}
    file_base, file_key_env = file_llm.get("api_base"), file_llm.get("api_key_env")
    from_env: dict[str, str] = {}
    for key, value in sorted(env.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):]
        dotted = _SHORT_ENV.get(name) or name.lower().replace("__", ".")
        _set_dotted(data, dotted, _parse_env_value(value))
        from_env[dotted] = key
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    if token:
        data.setdefault("publish", {})["token"] = token
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe_problem(e, from_env) for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None
    base_from_file = file_base is not None and "llm.api_base" not in from_env and (overrides or {}).get("llm.api_base") is None
    if base_from_file and config.llm.api_key_env != file_key_env:
        config.llm.api_key_env = None  # the file's api_base may only receive a key variable the same file names
    config.llm._api_base_from_file = base_from_file
    return config


def _describe_problem(error: Any, from_env: Mapping[str, str]) -> str:
    """One pydantic error as `key: what is wrong`, naming the environment variable that set it."""
    dotted = ".".join(map(str, error["loc"]))
    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    source = next((var for key, var in from_env.items() if dotted == key or dotted.startswith(key + ".")), None)
    return f"{dotted}: {message}" + (f" (set by {source})" if source else "")


def _read_file(path: Path | None, cwd: Path) -> dict[str, Any]:
    candidates = [path] if path else [cwd / "trace2skill.toml", cwd / "pyproject.toml"]
    for candidate in candidates:
        if candidate is None or not candidate.exists():
            if path is not None:
                raise ConfigError(f"config file {str(path)!r} does not exist")
            continue
        try:
            parsed = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {str(candidate)!r}: {exc}") from None
        if candidate.name == "pyproject.toml":
            parsed = parsed.get("tool", {}).get("trace2skill", {})
            if not parsed:
                continue
        return _anchor_paths(parsed, candidate.parent)
    return {}


_FILE_PATHS = (("state_dir",), ("skill", "out"), ("analyse", "labels"), ("publish", "repo"))


def _anchor_paths(parsed: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in a config file mean relative to that file, wherever the command runs."""
    if isinstance(parsed.get("sources"), list):
        parsed["sources"] = [s if Path(s).is_absolute() else str(base / s) for s in parsed["sources"]]
    for path in _FILE_PATHS:
        node = parsed
        for part in path[:-1]:
            node = node.get(part) if isinstance(node.get(part), dict) else {}
        value = node.get(path[-1])
        if isinstance(value, str) and not Path(value).is_absolute():
            node[path[-1]] = str(base / value)
    return parsed


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {dotted!r} conflicts with a value at {part!r}")
        node = child
    node[parts[-1]] = value


def _parse_env_value(value: str) -> Any:
    if value.startswith(("[", "{")):
        import json

        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
