"""The one door to the disk: every path trace2skill writes or removes goes through here.

A path is given as a root (the skill folder, its staging copy or the state folder) and a
relative name. `inside` checks the name (relative, no `..`, no empty part), joins it and
lstat's every component below the root, so a symlink on the way, planted by a merged pull
request or a hostile provenance.json, is refused instead of followed. `no_symlinks` refuses a
folder that contains any symlink at all (a skill folder is plain files). `exclusive` is the
one lock primitive: an flock on a file that is unlinked on release, so no lock file is left
in a working tree. `crash_point` is a test hook: `T2S_TEST_CRASH_AT=NAME` kills the
process with SIGKILL at the point called NAME (the variable sits outside the `TRACE2SKILL_` config
namespace on purpose), so tests can show a kill at each step is safe.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath

from .errors import LockHeld, SkillValidationError

CRASH_ENV = "T2S_TEST_CRASH_AT"


def safe_relative(name: str, what: str = "file path") -> PurePosixPath:
    """`name` as a relative POSIX path that cannot leave its root.

    Raises:
        SkillValidationError: absolute, empty, `.`/`..` parts, backslashes or NUL bytes.
    """
    relative = PurePosixPath(name) if isinstance(name, str) else None
    if (relative is None or not name or relative.is_absolute() or "\\" in name or "\0" in name
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise SkillValidationError([f"{what} {name!r} must be relative and stay inside the skill folder"])
    return relative


def inside(root: Path, name: str, what: str = "file path") -> Path:
    """`root / name`, refusing names that escape and symlinks on the way (root included).

    Raises:
        SkillValidationError: the name escapes, or a component that exists is a symlink.
    """
    relative = safe_relative(name, what)
    path = Path(root)
    refuse_symlink(path)
    for part in relative.parts:
        path = path / part
        refuse_symlink(path)
    return path


def refuse_symlink(path: Path) -> None:
    """Raise when `path` exists and is a symlink (a missing path is fine)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise SkillValidationError([f"{str(path)!r} is a symbolic link; trace2skill never writes through links "
                                    "(replace it with a regular file or remove it)"])


def no_symlinks(folder: Path) -> None:
    """Refuse a folder that is, or contains, a symlink anywhere below it.

    Raises:
        SkillValidationError: naming every link found.
    """
    folder = Path(folder)
    refuse_symlink(folder)
    if not folder.is_dir():
        return
    links = []
    for top, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            if os.path.islink(os.path.join(top, name)):
                links.append(os.path.join(top, name))
    if links:
        raise SkillValidationError([f"{link!r} is a symbolic link; trace2skill never reads or writes through links "
                                    "(replace it with a regular file or remove it)" for link in sorted(links)])


def write_bytes(root: Path, name: str, data: bytes) -> Path:
    """Write `root/name` (creating parent folders inside `root`); never through a symlink."""
    return write_chunks(root, name, (data,))


def write_chunks(root: Path, name: str, chunks: Iterable[bytes]) -> Path:
    """`write_bytes` of the concatenated `chunks`, written as they come (a large file, such as
    provenance.json at scale, is never held whole)."""
    target = inside(root, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    inside(root, name)  # a parent made just now is a real folder; re-check nothing raced in
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, 0o644)
    with os.fdopen(fd, "wb") as stream:
        for chunk in chunks:
            stream.write(chunk)
    return target


def remove_file(root: Path, name: str) -> None:
    """Remove `root/name` if it is a regular file, then its parent folders left empty (inside root)."""
    target = inside(root, name)
    if not target.is_file():
        return
    target.unlink()
    parent = target.parent
    while parent != Path(root) and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


@contextmanager
def exclusive(path: Path, busy: str) -> Iterator[Path]:
    """Hold an exclusive lock on `path` for the block, failing at once when another process has it.

    The lock file is unlinked before it is released, and a lock taken on a file that was
    unlinked meanwhile is retried, so no lock file outlives the run and two holders are
    impossible.

    Raises:
        LockHeld: with the message `busy`.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_symlink(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(busy) from None
        try:
            if os.path.samestat(os.fstat(fd), os.lstat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield path
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process here when `T2S_TEST_CRASH_AT` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
