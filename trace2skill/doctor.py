"""`trace2skill doctor`: check what a run needs before it starts, and say what to fix.

Python, the configuration, the model and its key (one cheap call, only when a model is
configured), git, `gh` or a GitHub token (when publishing needs them), and the paths the run
reads and writes. Each check gives `ok`, `warn` (works, but something is off) or `fail` (a run
would fail), with the fix.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from .config import Config

if TYPE_CHECKING:
    from .llm import LLMClient


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str = ""


class Ping(BaseModel):
    """The answer doctor asks the model for: the smallest structured reply."""

    ok: bool


def run_checks(config: Config, make_llm: Callable[[Config], LLMClient | None], *, verbose: bool = False) -> list[Check]:
    """Every check, in the order a run meets them; `verbose` keeps a model error whole."""
    return [_python(), *_model(config, make_llm, verbose), _git(config), _github(config), *_paths(config)]


def _python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):
        return Check("python", "fail", f"Python {version}", "install Python 3.11 or newer")
    return Check("python", "ok", f"Python {version} ({sys.executable})")


def _model(config: Config, make_llm: Callable[[Config], LLMClient | None], verbose: bool = False) -> list[Check]:
    if config.offline:
        return [Check("model", "ok", "offline analyst: no model, no key, no network needed")]
    checks = []
    missing = _missing_keys(config)
    if missing:
        checks.append(Check("key", "fail", f"{config.llm.model} needs {', '.join(missing)}",
                            f"export {missing[0]}=... (the provider's API key)"))
        return checks
    try:
        llm = make_llm(config)
        reply = asyncio.run(_one_call(llm))
    except Exception as exc:  # every failure of the one call is the finding, whatever its type
        said = " ".join(str(exc).split())
        return checks + [Check("model", "fail", f"{config.llm.model}: one test call failed: {said if verbose else said[:300]}",
                               "check llm.model, llm.api_base and the key; `trace2skill doctor -v` shows the full error")]
    usage = llm.usage
    return checks + [Check("model", "ok", f"{config.llm.model} answered one call (ok={reply.ok}; "
                                          f"{usage.input_tokens} in / {usage.output_tokens} out tokens)")]


async def _one_call(llm: LLMClient) -> Ping:
    from .llm import close_clients

    try:
        return await llm.complete([{"role": "user", "content": 'Reply with the JSON object {"ok": true}.'}], output=Ping,
                                  purpose="doctor")
    finally:
        await close_clients()  # inside the loop its HTTP session belongs to


def _missing_keys(config: Config) -> list[str]:
    """Environment variables the provider needs and lacks (litellm's own check); none for a
    local server (`llm.api_base`), the scripted model or an in-process GGUF."""
    model = config.llm.model
    if config.llm.api_base or model.startswith(("scripted", "llamacpp/")):
        return []
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    try:
        return list(litellm.validate_environment(model=model).get("missing_keys") or [])
    except Exception:  # an unknown provider: the test call will say what is wrong
        return []


def _git(config: Config) -> Check:
    git = shutil.which("git")
    needed = config.publish.mode != "none"
    if git is None:
        return Check("git", "fail" if needed else "warn", "git not found",
                     "install git (refresh --publish and history/rollback need it)")
    version = _run([git, "--version"]) or "git"
    return Check("git", "ok", version)


def _github(config: Config) -> Check:
    mode = config.publish.mode
    if mode == "gh":
        gh = shutil.which(config.publish.gh)
        if gh is None:
            return Check("github", "fail", f"{config.publish.gh!r} not found", "install the GitHub CLI, or use --publish github with GITHUB_TOKEN")
        if subprocess.run([gh, "auth", "status"], capture_output=True).returncode != 0:
            return Check("github", "fail", "gh is not logged in", "run `gh auth login` (or set GH_TOKEN)")
        return Check("github", "ok", "gh is installed and logged in")
    if mode == "github":
        if not config.publish.token:
            return Check("github", "fail", "no GITHUB_TOKEN or GH_TOKEN", "export GITHUB_TOKEN=... (contents and pull-requests write)")
        return Check("github", "ok", "GitHub token found in the environment")
    found = "gh found" if shutil.which(config.publish.gh) else "gh not found"
    token = "a token is set" if config.publish.token else "no token set"
    return Check("github", "ok", f"not needed (publish.mode = {mode!r}); {found}, {token}")


def _paths(config: Config) -> list[Check]:
    checks = []
    for source in config.sources:
        exists = Path(source).exists()
        checks.append(Check("sources", "ok" if exists else "fail", f"{source} {'exists' if exists else 'does not exist'}",
                            "" if exists else "fix `sources` in trace2skill.toml or give PATHS on the command line"))
    labels = config.analyse.labels
    if labels is not None and not Path(labels).is_file():
        checks.append(Check("labels", "fail", f"labels file {labels} does not exist", "fix analyse.labels or --labels"))
    if not config.sources:
        checks.append(Check("sources", "warn", "no `sources` configured", "give PATHS to distill, or run `trace2skill init`"))
    for label, path in (("skill folder", config.skill_dir()), ("state folder", config.state_dir)):
        anchor = next(p for p in [Path(path), *Path(path).absolute().parents] if p.exists())
        writable = anchor.is_dir() and os.access(anchor, os.W_OK | os.X_OK)
        checks.append(Check("paths", "ok" if writable else "fail", f"{label} {path} ({'writable' if writable else f'{anchor} is not a writable folder'})",
                            "" if writable else "choose another --out / state_dir, or fix the permissions"))
    return checks


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
