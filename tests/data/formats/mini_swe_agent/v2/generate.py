"""Make real mini-swe-agent 2.x trajectories: the real harness, a scripted model.

Runs mini-swe-agent's own `DefaultAgent` and `LocalEnvironment` with its deterministic test
models (`DeterministicToolcallModel` for the tool-call mode, `DeterministicModel` for the
2.x text mode) on a tiny local task: `calc.py` whose `add` subtracts. The commands really
run; their outputs, exit codes and the trajectory files are mini-swe-agent's own. Only the
model's replies are scripted. After the run the task's check is run once more and a
SWE-bench harness style `report.json` (`resolved_ids` / `unresolved_ids`) is written.

    pip install --target /tmp/msa-pkg mini-swe-agent   # 2.4.6 was used
    PYTHONPATH=/tmp/msa-pkg HOME=/tmp/msa-home python generate.py OUT_DIR
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from minisweagent import package_dir
from minisweagent.agents.default import DefaultAgent
from minisweagent.environments.local import LocalEnvironment
from minisweagent.models.test_models import DeterministicModel, DeterministicToolcallModel

TASK = "calc.add(2, 3) returns -1; it must return 5."
CHECK = "python3 -c 'import calc; assert calc.add(2, 3) == 5, calc.add(2, 3)'"
FIX = "sed -i 's/return a - b/return a + b/' calc.py"


def call(call_id, command):
    return {"id": call_id, "type": "function",
            "function": {"name": "bash", "arguments": json.dumps({"command": command})}}


TURNS = iter(range(1, 100))


def toolcall_turn(text, commands):
    turn = next(TURNS)
    calls = [call(f"call_{turn}_{n}", c) for n, c in enumerate(commands)]
    actions = [{"command": c, "tool_call_id": t["id"]} for c, t in zip(commands, calls)]
    return {"role": "assistant", "content": text, "tool_calls": calls,
            "extra": {"actions": actions, "cost": 0.0}}


def text_turn(text, command):
    return {"role": "assistant", "content": f"{text}\n\n```mswea_bash_command\n{command}\n```",
            "extra": {"actions": [{"command": command}], "cost": 0.0}}


def workdir():
    folder = Path(tempfile.mkdtemp(prefix="msa-task-"))
    (folder / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    subprocess.run("git init -q && git add . && git -c user.email=x@y -c user.name=x commit -qm init",
                   shell=True, cwd=folder, check=True)
    return folder


def run(instance, model, config_name, out):
    config = yaml.safe_load((Path(package_dir) / "config" / config_name).read_text())
    folder = workdir()
    agent = DefaultAgent(model, LocalEnvironment(cwd=str(folder)), **config["agent"])
    agent.run(TASK)
    resolved = subprocess.run(CHECK, shell=True, cwd=folder).returncode == 0
    path = out / instance / f"{instance}.traj.json"
    agent.save(path, {"instance_id": instance})
    return resolved


def main(out):
    out = Path(out)
    toolcall_obs = yaml.safe_load((Path(package_dir) / "config" / "mini.yaml").read_text())["model"]
    text_cfg = yaml.safe_load((Path(package_dir) / "config" / "mini_textbased.yaml").read_text())["model"]
    toolcall = DeterministicToolcallModel(
        outputs=[
            toolcall_turn("Read the code and reproduce the bug in parallel.", ["cat calc.py", CHECK, "ls -la"]),
            toolcall_turn("The sign is wrong; fix it and check again.", [FIX, CHECK]),
            toolcall_turn("Fixed; look for a test folder that is not there.", ["ls tests"]),
            toolcall_turn("Submit.", ["echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git diff"]),
        ],
        **{k: v for k, v in toolcall_obs.items() if k in ("observation_template", "format_error_template")},
    )
    text = DeterministicModel(
        outputs=[
            text_turn("Reproduce the bug.", CHECK),
            text_turn("Read the code.", "cat calc.py"),
            text_turn("Give up without fixing; submit.", "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git diff"),
        ],
        **{k: v for k, v in text_cfg.items() if k in ("observation_template",)},
    )
    report = {"resolved_ids": [], "unresolved_ids": []}
    for instance, model, config in (("local__calc-toolcall", toolcall, "mini.yaml"),
                                    ("local__calc-text", text, "mini_textbased.yaml")):
        resolved = run(instance, model, config, out)
        report["resolved_ids" if resolved else "unresolved_ids"].append(instance)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
