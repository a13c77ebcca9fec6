"""Reading files a user names, safely: a regular file of sane size, bounded nesting, and error
messages built from the raw text, never from a parsed (possibly alias-expanded) value.

Every command that opens a user's file goes through here, so a FIFO, `/dev/zero`, a directory,
a 300-character name, a 2 GB "config" or a "billion laughs" YAML is a one-line `InputError`.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from planner.constants import KIB, MIB
from planner.errors import InputError

MAX_CONFIG_BYTES = 16 * MIB
"""config.json, answers files, plan and recommendation JSON: far above any real one."""
MAX_NESTING = 64
"""Deepest list/dict nesting accepted in a config or answers file (real ones use < 10)."""
MAX_YAML_ALIASES = 64
"""YAML aliases accepted in an answers file: real ones use none; each can double the value."""


def checked_path(path: str | Path, what: str, max_bytes: int | None = MAX_CONFIG_BYTES) -> Path:
    """`path` when it is an existing regular file no larger than `max_bytes`, else InputError
    saying what is wrong (no such file, a folder, a FIFO or device, too large, unreadable)."""
    shown = _shown(path)
    try:
        path = Path(path).expanduser()
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} {shown}: no such file") from None
    except RuntimeError:  # `~nosuchuser/x`: expanduser cannot find the user
        raise InputError(f"{what} {shown}: no such user's home folder") from None
    except (OSError, ValueError) as error:  # name too long, NUL byte, permission, loop
        raise InputError(f"{what} {shown}: cannot read it ({_reason(error)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{what} {shown}: is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what} {shown}: not a regular file (a pipe, socket or device)")
    if max_bytes is not None and info.st_size > max_bytes:
        raise InputError(
            f"{what} {shown}: {_size(info.st_size)} is larger than the "
            f"{_size(max_bytes)} this tool reads for it"
        )
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {shown}: no permission to read it")
    return path


def read_text(path: str | Path, what: str, max_bytes: int | None = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a checked file (see `checked_path`), or InputError."""
    path = checked_path(path, what, max_bytes)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {_shown(path)}: not UTF-8 text") from None
    except (OSError, MemoryError) as error:
        raise InputError(f"{what} {_shown(path)}: cannot read it ({_reason(error)})") from None


def parse_json(text: str, what: str) -> Any:
    """json.loads with nesting bounded by MAX_NESTING; InputError names line and column."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{what}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    except RecursionError:
        raise InputError(f"{what}: nested deeper than {MAX_NESTING} levels") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise InputError(f"{what}: not valid JSON (a number with too many digits)") from None
    if nesting_depth(value) > MAX_NESTING:
        raise InputError(f"{what}: nested deeper than {MAX_NESTING} levels")
    return value


def parse_yaml(text: str, what: str) -> Any:
    """yaml.safe_load with aliases and nesting bounded (a "billion laughs" file is refused
    before anything expands it); InputError names the line."""
    import yaml  # imported here: only answers files need it

    try:
        aliases = depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_YAML_ALIASES:
                    raise InputError(f"{what}: more than {MAX_YAML_ALIASES} YAML aliases (*name)")
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                # Stop here: PyYAML's scanner slows quadratically with flow nesting depth.
                if depth > MAX_NESTING:
                    raise InputError(f"{what}: nested deeper than {MAX_NESTING} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        value = yaml.safe_load(text)
    except InputError:
        raise
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "cannot parse it"
        raise InputError(f"{what}: not valid YAML ({problem}{where})") from None
    except RecursionError:
        raise InputError(f"{what}: nested deeper than {MAX_NESTING} levels") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise InputError(f"{what}: not valid YAML (a number with too many digits)") from None
    if nesting_depth(value) > MAX_NESTING:
        raise InputError(f"{what}: nested deeper than {MAX_NESTING} levels")
    return value


def nesting_depth(value: Any, limit: int = MAX_NESTING + 1) -> int:
    """Depth of nested lists/dicts, counted without recursion and capped at `limit`; shared
    (aliased) containers are visited once."""
    deepest, seen = 0, set()
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            depth += 1
            deepest = max(deepest, depth)
            if deepest >= limit or id(item) in seen:
                if deepest >= limit:
                    return deepest
                continue
            seen.add(id(item))
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


def short(value: Any, limit: int = 60) -> str:
    """A one-line description of a parsed value for an error message, built without expanding
    it: scalars as repr (cut to `limit`), containers by type and size."""
    if isinstance(value, dict):
        return f"a mapping of {len(value)} key" + ("" if len(value) == 1 else "s")
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item" + ("" if len(value) == 1 else "s")
    if isinstance(value, str | bytes):
        text = repr(value[: limit + 1])
        return text if len(value) <= limit else text[: limit - 1] + "…'"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**limit:
        return "a very large integer"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(path: object, limit: int = 240) -> str:
    """A path or name as an error message shows it: printable characters only; past `limit`
    the middle is cut, so the start and the file's own name stay readable."""
    text = "".join(c if c.isprintable() else "?" for c in str(path))  # no newline or NUL
    if len(text) <= limit:
        return text
    head = limit // 3
    return text[:head] + "…" + text[len(text) - (limit - head - 1) :]


_shown = shown


def _size(count: int) -> str:
    """Bytes as MiB, or KiB below a MiB (a 64 KiB limit is not "0 MiB"), to one decimal."""
    unit, name = (MIB, "MiB") if count >= MIB else (KIB, "KiB")
    return f"{count / unit:,.1f}".removesuffix(".0") + f" {name}"


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or type(error).__name__
