"""Writing a file a user names (a decision record, a session record, an answers file): never
over an existing file unless asked, never into a pipe or device, and every failure one line."""

from __future__ import annotations

import stat
from pathlib import Path

from planner.errors import InputError
from planner.files import shown


class FileExists(InputError):
    """The target exists and overwriting was not asked for; the caller says how to ask."""


def target(path: str | Path, what: str) -> Path:
    """`path` with `~` expanded, or InputError for a `~user` that does not exist."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise InputError(f"{what} {shown(path)}: no such user's home folder") from None


def existing_file(path: str | Path, what: str) -> bool:
    """Whether a regular file is already at `path` (one a save would replace; a folder, a pipe
    or a device is not, and `write_text` refuses those)."""
    try:
        return target(path, what).is_file()
    except (InputError, OSError, ValueError):  # no such home, or a name no file can have
        return False


def write_text(
    path: str | Path, text: str, what: str, *, overwrite: bool = False, hint: str = ""
) -> Path:
    """Write `text` to `path` as UTF-8 and return the path written. An existing file raises
    FileExists (its message ends with `hint`) unless `overwrite`; a folder, a pipe or a device
    is refused even then (opening a FIFO to write waits for a reader forever)."""
    where = target(path, what)
    name = f"{what} {shown(path)}"
    try:
        info = where.stat() if where.exists() else None
    except (OSError, ValueError):
        info = None  # open() below says what is wrong with the name
    if info is not None and not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise InputError(f"{name}: {kind}; choose a file name")
    try:
        with where.open("w" if overwrite else "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise FileExists(f"{name}: the file exists" + (f"; {hint}" if hint else "")) from None
    except (OSError, ValueError) as error:  # missing folder, permission, name too long, NUL
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise InputError(f"{name}: cannot write it ({reason})") from None
    return where
