"""Reading shell text: simple commands, the real program behind wrappers, command families.

A *family* is the normalised name of what a command runs (`pytest`, `python script`,
`runtests.py`, `git diff`, `sed`): signatures, recoveries and behaviours are all keyed by it,
so it must ignore paths, arguments and set-up noise (`cd /testbed && FOO=1 timeout 30 ...`).
The parsing is deliberately shallow (split on `&&`, `||`, `;`, pipes and newlines, drop
heredoc bodies): agents' commands are short, and a wrong split only blurs a family.
"""

from __future__ import annotations

import re

TEST_RUNNERS = frozenset({"pytest", "runtests.py", "bin/test", "unittest", "tox", "nose", "django test",
                          "npm test", "yarn test", "pnpm test", "bun test", "npx jest", "npx vitest", "jest", "vitest",
                          "mocha", "go test", "cargo test", "mvn test", "gradle test", "rspec", "dotnet test",
                          "make test", "ctest", "phpunit"})
"""Test commands of common languages: their failures are judged by the runner's summary."""
SUBCOMMAND_TOOLS = frozenset({"git", "npm", "yarn", "pnpm", "bun", "npx", "cargo", "go", "mvn", "gradle", "./gradlew",
                              "make", "docker", "pip", "pip3", "bundle", "dotnet", "kubectl", "uv", "poetry"})
"""Programs whose first argument names what they do (`git diff`, `npm test`, `go build`)."""
SETUP_WRAPPERS = frozenset({"cd", "export", "source", ".", "set", "ulimit", "pushd", "popd", "unset"})
"""Commands that only prepare the shell; the family is that of the next real command."""
PREFIX_WRAPPERS = frozenset({"sudo", "time", "nohup", "env", "exec", "stdbuf", "xvfb-run"})
LINTERS = frozenset({"flake8", "pycodestyle", "pyflakes", "mypy", "ruff", "black", "isort", "pylint"})

HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1[^\n]*\n.*?\n\s*\2[ \t]*(?=\n|$)", re.S)
_SHELL_TOOLS = frozenset({"sh", "run", "execute", "terminal", "unknown", "local_shell", "container.exec"})


def without_heredoc_bodies(command: str) -> str:
    """The command with each heredoc reduced to its opening line (`cat <<'EOF' > x.py`)."""
    return HEREDOC.sub(lambda m: m.group(0).split("\n", 1)[0], command)


def simple_commands(command: str) -> list[list[str]]:
    """Split shell text into simple commands (heredoc bodies removed), each as words."""
    text = re.sub(r"\\\n", " ", without_heredoc_bodies(command))
    parts = re.split(r"&&|\|\||;|\|&|\||\n|(?<![<>&])&(?![>&])", text)
    return [words for words in (part.split() for part in parts) if words]


def program(words: list[str]) -> tuple[str, list[str]]:
    """Strip assignments and wrappers (`FOO=1 timeout 30 python ...`) to the real program."""
    words = list(words)
    while words:
        head = words[0]
        if re.match(r"^[A-Za-z_]\w*=", head) or head in PREFIX_WRAPPERS:
            words.pop(0)
        elif head == "timeout":
            words.pop(0)
            while words and (words[0].startswith("-") or re.match(r"^\d+[smhd]?$", words[0])):
                words.pop(0)
        else:
            break
    return (words[0], words[1:]) if words else ("", [])


def real_commands(command: str) -> list[tuple[str, list[str]]]:
    """(program, arguments) of every simple command that does more than set up the shell."""
    programs = (program(words) for words in simple_commands(command))
    return [(name, args) for name, args in programs if name and name not in SETUP_WRAPPERS]


def family(command: str, tool: str = "bash") -> str:
    """Normalised command family: `pytest`, `python script`, `runtests.py`, `sed`, `git diff`...

    Calls to non-shell tools (an editor, a domain API) are their own family: the tool name.
    """
    if not is_shell(tool, command):
        return tool.lower()
    commands = real_commands(command)
    return family_of(*commands[0]) if commands else "shell"


def is_shell(tool: str, command: str = "") -> bool:
    """Shell tools go by many names (`bash`, `execute_bash`, `Bash`, `shell_exec`); SWE-agent
    names the call after the command's first word, so `cat` with `cat x` is shell too."""
    name = tool.lower()
    return (name in _SHELL_TOOLS
            or any(part in name for part in ("bash", "shell", "command", "exec"))
            or (bool(command) and command.split()[0] == tool))


def family_of(name: str, args: list[str]) -> str:
    """The family of one program with its arguments (see `family`)."""
    base = name.rsplit("/", 1)[-1]
    if re.fullmatch(r"python[\d.]*", base):
        return _python_family(args)
    if base in ("py.test", "pytest"):
        return "pytest"
    if base == "runtests.py" or (name.endswith("bin/test") and base == "test"):
        return "runtests.py" if base == "runtests.py" else "bin/test"
    if base in SUBCOMMAND_TOOLS or name in SUBCOMMAND_TOOLS:
        sub = next((a for a in args if not a.startswith("-")), "")
        if base == "npm" and sub == "run":
            sub = next((a for a in args[args.index("run") + 1:] if not a.startswith("-")), "run")
        return f"{base} {sub}".strip() if re.fullmatch(r"[\w:.-]+", sub or "-") else base
    if base.endswith(".sh") or (name.startswith(("./", "/")) and base != name):
        return "script"
    return base


def _python_family(args: list[str]) -> str:
    rest = [a for a in args if a not in ("-u", "-B", "-W", "-X", "-O") and not a.startswith(("-W", "-X"))]
    if rest[:1] == ["-m"] and len(rest) > 1:
        module = rest[1]
        if module in LINTERS:
            return module
        return {"pytest": "pytest", "py.test": "pytest", "unittest": "unittest", "django": "django test"}.get(
            module, f"python -m {module}")
    if rest[:1] == ["-c"]:
        return "python -c"
    if rest and rest[0].rsplit("/", 1)[-1] in ("runtests.py", "manage.py", "setup.py"):
        return rest[0].rsplit("/", 1)[-1]
    return "python script" if rest and not rest[0].startswith("-") else "python"


def shape(command: str) -> str:
    """A command reduced to its family and flags, e.g. `pytest -k`, `rm -f`: what two
    recoveries must share to count as the same fix."""
    name = family(command)
    commands = real_commands(command)
    args = commands[0][1] if commands else []
    flags = sorted({a.split("=")[0] for a in args if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", a)} - set(name.split()))
    if any("::" in a for a in args):
        flags.append("path::test")
    return " ".join([name, *flags[:3]])
