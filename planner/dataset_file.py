"""Reading a user's dataset file safely: where it is, and each of its rows, checked.

A dataset is a JSONL / JSON / CSV / Parquet file (the text formats also gzip-compressed, as
hh-rlhf ships them) or a folder written by `datasets`' `save_to_disk`. Everything that
`advisor plan --dataset` and `advisor check-data` read goes through here first, and is read
where it lies (never copied into the Hugging Face cache), so a FIFO, a device, a stray folder,
a broken line, non-UTF-8 bytes or nesting that would crash a parser is a one-line `InputError`
naming the file and the line.
Only the standard library is imported at module level (pyarrow only for Parquet and saved
folders).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import itertools
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from planner.constants import GIB, MIB
from planner.errors import InputError
from planner.files import checked_path, nesting_depth, short, shown

MAX_DATASET_BYTES = 16 * GIB
"""One dataset file: the pre-flight holds every row in memory (several times the file's size);
public preference and SFT sets are well under 2 GiB, and a sparse 1 TB file is refused at once."""
MAX_ROW_BYTES = 64 * MIB
"""One JSONL or CSV line: a 128k-token conversation is under 1 MiB."""
MAX_ROW_NESTING = 32
"""Deepest nesting of one row (the row's object is level 1): Arrow, which `datasets` uses,
refuses 64 levels; real rows, tool calls included, use fewer than 10."""
FORMATS = {".jsonl": "JSON Lines", ".json": "JSON", ".csv": "CSV", ".parquet": "Parquet"}
"""Supported file suffixes and the format's name in messages."""
GZIP_FORMATS = (".jsonl", ".json", ".csv")
"""Formats also read gzip-compressed (NAME.jsonl.gz): `datasets` decompresses them the same way."""
LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""Format (`file_format`) -> the `datasets` builder that reads it; it decompresses .gz itself."""
SUPPORTED = "use .jsonl, .json, .csv or .parquet, or .jsonl.gz, .json.gz or .csv.gz"
"""What an unsupported file is told to be instead."""
NOT_A_HUB_ID = (
    "no such file or folder (a Hub dataset id is not read: save the dataset with `datasets`' "
    "save_to_disk and give that folder)"
)
"""The refusal of a name that is no local path, as check-data, plan and launch all give it."""
SAVED_MARKERS = ("state.json", "dataset_dict.json")
"""Files `save_to_disk` writes at the top of a Dataset / DatasetDict folder."""
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class Scan(NamedTuple):
    """What a checked dataset file holds: row count, column names, and for a JSON file whose
    rows sit under a key ({"data": [...]}) that key."""

    rows: int
    columns: frozenset[str]
    field: str | None = None


def label(reference: object) -> str:
    """'dataset NAME' for messages, the name as `planner.files.shown` shows a path."""
    return f"dataset {shown(reference)}"


def file_format(path: str | Path) -> str:
    """The format suffix of a dataset file name ('.jsonl' for both x.jsonl and x.jsonl.gz), or ''
    when it is not one that is read."""
    name = Path(path).name.lower()
    for suffix in FORMATS:
        if name.endswith(suffix) or (suffix in GZIP_FORMATS and name.endswith(f"{suffix}.gz")):
            return suffix
    return ""


def _compressed(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def looks_like_path(reference: str) -> bool:
    """True when `reference` is meant as a local path, not a Hugging Face Hub dataset id."""
    return reference.startswith((".", "/", "~")) or bool(file_format(reference))


def dataset_location(reference: str) -> Path:
    """The checked local file or saved folder that `reference` names; InputError for anything
    else (missing, a Hub dataset id, a FIFO, a device, a folder not written by `save_to_disk`,
    an unsupported suffix, too large, unreadable). Every command reads datasets only here, so
    none takes a Hub id that another would refuse."""
    name = label(reference)
    if not reference.strip():
        raise InputError("dataset: the name is empty; give a JSONL/JSON/CSV/Parquet file")
    try:
        path = Path(reference).expanduser()
        info = path.stat()
    except FileNotFoundError:
        if looks_like_path(reference):
            raise InputError(f"{name}: no such file or folder") from None
        raise InputError(f"{name}: {NOT_A_HUB_ID}") from None
    except (OSError, ValueError, RuntimeError):
        checked_path(reference, "dataset")  # raises its one-line reason
        raise  # pragma: no cover - checked_path always raises here
    if stat.S_ISDIR(info.st_mode):
        if not any((path / marker).is_file() for marker in SAVED_MARKERS):
            raise InputError(
                f"{name}: a folder, but not a dataset saved with `save_to_disk` (no "
                f"{' or '.join(SAVED_MARKERS)} in it); give a JSONL/JSON/CSV/Parquet file"
            )
        _check_saved_folder(path, name)
        return path
    path = checked_path(path, "dataset", MAX_DATASET_BYTES)
    if not file_format(path):
        raise InputError(
            f"{name}: unsupported format {path.suffix or '(no suffix)'!r} ({SUPPORTED})"
        )
    return path


def _check_saved_folder(path: Path, name: str, most: int = 10_000) -> None:
    """InputError when a saved folder holds a pipe or device (reading it would hang); a real
    one holds a few files, so at most `most` of them are looked at."""
    seen = 0
    for folder, _, files in os.walk(path):  # an unlistable part fails later, in one line
        for file in files:
            seen += 1
            if seen > most:
                return
            try:
                mode = (Path(folder) / file).stat().st_mode
            except OSError as error:
                raise InputError(
                    f"{name}: cannot read {file} in it ({_io_reason(error)})"
                ) from None
            if not stat.S_ISREG(mode):
                shown = "".join(c if c.isprintable() else "?" for c in file)[:80]
                raise InputError(f"{name}: {shown} in it is not a regular file (a pipe or device)")


def iter_rows(path: Path, name: str) -> Iterator[dict[str, Any]]:
    """Each row of a checked JSONL / JSON / CSV / Parquet file (or saved folder) as a dict;
    InputError names the file and the line (or item) of the first defect."""
    suffix = file_format(path)
    try:
        if path.is_dir():
            yield from _saved_rows(path, name)
        elif suffix == ".jsonl":
            yield from _jsonl_rows(path, name)
        elif suffix == ".json":
            rows, _ = _json_document(path, name)
            yield from _jsonl_rows(path, name) if rows is None else rows
        elif suffix == ".csv":
            yield from _csv_rows(path, name)
        elif suffix == ".parquet":
            yield from _parquet_rows(path, name)
        else:
            raise InputError(f"{name}: unsupported format ({SUPPORTED})")
    except (OSError, MemoryError, EOFError, zlib.error) as error:
        raise _read_error(name, error) from None


def read_rows(reference: str) -> list[dict[str, Any]]:
    """Every row of the dataset `reference` names, read where it lies: a file row by row, a
    saved folder's Arrow files memory-mapped (`datasets.load_dataset` would copy a file into
    the Hugging Face cache first)."""
    return list(iter_rows(dataset_location(reference), label(reference)))


def scan(path: Path, name: str) -> Scan:
    """Check every row of a dataset file (Parquet: its schema) and count them."""
    suffix = file_format(path)
    if suffix == ".parquet":
        parquet = _parquet_file(path, name)
        parquet.close()
        return Scan(parquet.metadata.num_rows, frozenset(parquet.schema_arrow.names))
    field = None
    if suffix == ".json":
        try:
            rows, field = _json_document(path, name)
        except (OSError, MemoryError, EOFError, zlib.error) as error:
            raise _read_error(name, error) from None
        if rows is not None:
            return Scan(len(rows), frozenset(k for row in rows for k in row), field)
    count, columns = 0, set()
    for row in iter_rows(path, name):
        count += 1
        columns.update(row)
    return Scan(count, frozenset(columns), field)


def row_lines(path: Path, name: str) -> list[int] | None:
    """The line number of each row of a checked JSON Lines file (blank lines hold none), or None
    for a file whose rows are not lines (JSON list, CSV, Parquet, saved folder)."""
    if path.is_dir() or file_format(path) not in (".jsonl", ".json"):
        return None
    try:
        if file_format(path) == ".json" and _json_document(path, name)[0] is not None:
            return None
        return [number for number, text in _lines(path, name) if text.strip()]
    except (OSError, MemoryError, EOFError, zlib.error) as error:
        raise _read_error(name, error) from None


def _open(path: Path):
    """The file's bytes, decompressed when its name ends in .gz."""
    return gzip.open(path, "rb") if _compressed(path) else path.open("rb")


def _lines(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """(number, text) of each line, UTF-8 decoded (a leading BOM dropped), at most
    MAX_ROW_BYTES each."""
    with _open(path) as handle:
        total = 0
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_ROW_BYTES + 1), b""), 1):
            total += len(raw)
            if total > MAX_DATASET_BYTES:  # only a compressed file gets here (checked_path)
                raise InputError(f"{name}: more than {MAX_DATASET_BYTES // GIB} GiB decompressed")
            if len(raw) > MAX_ROW_BYTES:
                raise InputError(
                    f"{name} line {number}: longer than {MAX_ROW_BYTES // MIB} MiB, far more "
                    "than one row; is it really a text dataset?"
                )
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"{name} line {number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at "
                    f"byte {error.start + 1} of the line); re-save the file as UTF-8"
                ) from None
            yield number, text


def _jsonl_rows(path: Path, name: str) -> Iterator[dict[str, Any]]:
    for number, text in _lines(path, name):
        if text.strip():
            yield _json_row(text, f"{name} line {number}")


def _json_row(text: str, where: str) -> dict[str, Any]:
    """One JSON Lines row: an object, nested at most MAX_ROW_NESTING deep, no lone surrogates."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    except _DuplicateKey as error:
        raise InputError(f"{where}: {error}") from None
    except RecursionError:
        raise InputError(f"{where}: nested deeper than {MAX_ROW_NESTING} levels") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise InputError(f"{where}: not valid JSON (a number with too many digits)") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object (one row), found {_found(value)}")
    if _too_deep(value, text, MAX_ROW_NESTING):
        raise InputError(f"{where}: nested deeper than {MAX_ROW_NESTING} levels")
    if _ESCAPED_SURROGATE.search(text):
        _check_surrogates(value, where)
    return value


class _DuplicateKey(ValueError):
    """A JSON object that names one key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; _DuplicateKey when a key repeats (Python keeps the last value,
    the Arrow JSON reader that `datasets` uses for training refuses the file)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(
            f"the key {short(key)} appears twice in one object (the trainer's reader refuses it)"
        )
    return value


def _too_deep(value: Any, text: str, limit: int) -> bool:
    """Whether value nests deeper than limit; text (its JSON) lets ordinary rows skip the walk,
    since nothing nests deeper than it has brackets."""
    if text.count("[") + text.count("{") <= limit:
        return False
    return nesting_depth(value, limit + 1) > limit


def _check_surrogates(value: Any, where: str) -> None:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"{where}: a \\u escape stands for half a character (a lone UTF-16 surrogate)"
        ) from None


def _json_document(path: Path, name: str) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(rows, field) of a .json file holding one document: a list of rows, a list of strings
    (rows of "text"), or {"data": [rows]}; (None, None) when it is JSON Lines instead."""
    with _open(path) as handle:
        raw = handle.read(MAX_DATASET_BYTES + 1)
    if len(raw) > MAX_DATASET_BYTES:  # only a compressed file gets here (checked_path)
        raise InputError(f"{name}: more than {MAX_DATASET_BYTES // GIB} GiB decompressed")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise InputError(
            f"{name} line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); "
            "re-save the file as UTF-8"
        ) from None
    del raw
    if not text.strip():
        return [], None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as error:
        raise InputError(f"{name}: {error}") from None
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # one document per line: JSON Lines named .json
            return None, None
        raise InputError(
            f"{name} line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    except RecursionError:
        raise InputError(f"{name}: rows nested deeper than {MAX_ROW_NESTING} levels") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise InputError(f"{name}: not valid JSON (a number with too many digits)") from None
    if _too_deep(value, text, MAX_ROW_NESTING + 1):  # + 1: the list that holds the rows
        raise InputError(f"{name}: rows nested deeper than {MAX_ROW_NESTING} levels")
    if _ESCAPED_SURROGATE.search(text):
        _check_surrogates(value, name)
    field = None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value, field = value["data"], "data"
    if not isinstance(value, list):
        raise InputError(
            f'{name}: expected a list of rows (JSON objects) or {{"data": [rows]}}, '
            f"found {_found(value)}"
        )
    if value and all(isinstance(item, str) for item in value):
        return [{"text": item} for item in value], field  # as `datasets` reads a list of strings
    for number, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise InputError(
                f"{name} item {number}: expected a JSON object (one row), found {_found(item)}"
            )
    return value, field


def _csv_rows(path: Path, name: str) -> Iterator[dict[str, Any]]:
    """Rows of a CSV file with a header line; a row with more fields than the header (which
    `datasets` refuses) names its line."""
    csv.field_size_limit(MAX_ROW_BYTES)  # the default 128 KiB is short for long completions
    lines = _lines(path, name)
    blank = 0
    for _, text in lines:  # blank lines before the header: `datasets` (pandas) skips them
        if text.strip():
            break
        blank += 1
    else:
        return
    # strict: an unclosed quote is an error, as in the pandas reader `datasets` trains from
    reader = csv.DictReader(itertools.chain([text], (text for _, text in lines)), strict=True)
    try:
        for row in reader:
            if None in row:
                header = reader.fieldnames or []
                raise InputError(
                    f"{name} line {blank + reader.line_num}: "
                    f"{len(header) + len(row[None])} fields, but the header has {len(header)}"
                )
            yield row
    except csv.Error as error:
        raise InputError(
            f"{name} line {blank + reader.line_num}: not valid CSV ({error})"
        ) from None


def _parquet_file(path: Path, name: str):
    """The opened pyarrow ParquetFile, its rows nested at most MAX_ROW_NESTING deep."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as error:
        raise _parquet_error(name, error) from None
    types = [(field.type, 2) for field in schema]  # the row is level 1, as in JSON
    while types:
        kind, depth = types.pop()
        if depth > MAX_ROW_NESTING:
            parquet.close()
            raise InputError(f"{name}: rows nested deeper than {MAX_ROW_NESTING} levels")
        types.extend((kind.field(i).type, depth + 1) for i in range(kind.num_fields))
    return parquet


def _parquet_rows(path: Path, name: str) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    parquet = _parquet_file(path, name)
    try:
        for batch in parquet.iter_batches():
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError, ValueError) as error:
        raise _parquet_error(name, error) from None
    finally:
        parquet.close()


def _saved_rows(folder: Path, name: str) -> Iterator[dict[str, Any]]:
    """Rows of a `save_to_disk` folder (a DatasetDict's train split), read from the Arrow files
    its state.json lists with pyarrow, memory-mapped: no `datasets` import, nothing copied."""
    import pyarrow as pa

    if (folder / "dataset_dict.json").is_file():
        if not (folder / "train" / "state.json").is_file():
            raise InputError(f"{name}: a saved DatasetDict without a 'train' split")
        folder = folder / "train"
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (ValueError, KeyError, TypeError) as error:
        reason = f"state.json: {one_line(error)}"
        raise InputError(f"{name}: cannot load the saved folder ({reason})") from None
    for file in files:
        if file.resolve().parent != folder.resolve():
            raise InputError(f"{name}: its state.json names a file outside the folder")
        try:
            with pa.memory_map(str(file)) as source:
                for batch in pa.ipc.open_stream(source):
                    yield from batch.to_pylist()
        except (pa.ArrowException, ValueError) as error:
            reason = f"{file.name}: {one_line(error)}"
            raise InputError(f"{name}: cannot load the saved folder ({reason})") from None


def _parquet_error(name: str, error: Exception) -> InputError:
    # pyarrow reports a damaged file as an OSError without errno; a real I/O error has one.
    if isinstance(error, OSError) and error.errno is not None:
        return InputError(f"{name}: cannot read it ({_io_reason(error)})")
    return InputError(f"{name}: not a readable Parquet file ({one_line(error)})")


def _read_error(name: str, error: BaseException) -> InputError:
    """The one-line error for a file that cannot be read: an I/O error or a damaged gzip stream."""
    if isinstance(error, (gzip.BadGzipFile, EOFError, zlib.error)):
        return InputError(f"{name}: not a readable gzip file ({one_line(error)})")
    return InputError(f"{name}: cannot read it ({_io_reason(error)})")


def _io_reason(error: OSError | MemoryError) -> str:
    if isinstance(error, MemoryError):
        return "out of memory"
    return error.strerror or one_line(error)


def _found(value: Any) -> str:
    """A parsed JSON value as an error message names it: scalars in JSON spelling."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return short(value)


def one_line(error: BaseException, limit: int = 160) -> str:
    """A library error's message as one short line (its type name when it has none)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
