"""Loading a training dataset from where users keep one: a local file, a saved folder, the HF cache."""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path

from planner.dataset_file import (
    FORMATS,
    LOADERS,
    dataset_location,
    file_format,
    iter_rows,
    label,
    one_line,
    scan,
)
from planner.errors import InputError


def load_train_split(reference: str, *, quiet: bool = False):
    """A `datasets.Dataset`: a JSONL/JSON/CSV/Parquet file (.gz too) or a `save_to_disk` folder
    (a Hub dataset id is refused, as `advisor launch` refuses it).

    A local file is checked row by row before `datasets` reads it, so a broken one is a
    one-line InputError naming its line; `quiet` hides the library's logging and progress bars.
    """
    import datasets

    location = dataset_location(reference)
    name = label(reference)
    if location.is_dir():
        try:
            with _quiet_datasets(quiet):
                loaded = datasets.load_from_disk(str(location))
        except Exception as error:  # a damaged folder fails in many ways inside datasets
            raise InputError(f"{name}: cannot load the saved folder ({_reason(error)})") from None
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise InputError(f"{name}: a saved DatasetDict without a 'train' split")
            return loaded["train"]
        return loaded
    found = scan(location, name)
    if not found.rows or not found.columns:
        return datasets.Dataset.from_list([])  # `datasets` cannot build an empty split
    try:
        if found.field:  # {"data": [rows]}: the json builder's `field` path fails on a UTF-8 BOM
            return datasets.Dataset.from_list(list(iter_rows(location, name)))
        with _quiet_datasets(quiet):
            loader = LOADERS[file_format(location)]
            return datasets.load_dataset(loader, data_files=str(location), split="train")
    except InputError:
        raise
    except Exception as error:  # what the row check let through and `datasets` still refuses
        kind = FORMATS[file_format(location)]
        raise InputError(f"{name}: cannot read it as {kind} ({_reason(error)})") from None


@contextlib.contextmanager
def _quiet_datasets(quiet: bool):
    """Silence `datasets`' logging and progress bars for the duration (when quiet)."""
    import datasets

    if not quiet:
        yield
        return
    verbosity = datasets.logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def read_failure(reference: str, error: BaseException) -> InputError:
    """The one-line error for a local dataset that `datasets` failed to read or decode."""
    return InputError(f"{label(reference)}: cannot read it ({_reason(error)})")


def _reason(error: BaseException) -> str:
    """The root cause of a `datasets` error (it wraps the parser's) as one short line."""
    while error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, MemoryError):
        return "out of memory"
    # pyarrow counts rows from 0 within a block, not from the file's start: misleading here.
    return re.sub(r" in row \d+\.?$", "", one_line(error))


SAVED_DATA_FILES = ("data-*.arrow", "state.json", "dataset_info.json", "dataset_dict.json")
"""The files of a `save_to_disk` folder (and of each split folder of a saved DatasetDict) that
hold its data. Not `cache-*.arrow`: TRL's tokenizing writes those into the folder during
training, and a resume must not read them as a changed dataset."""


def saved_data_files(folder: Path) -> list[Path]:
    """The data files of a `save_to_disk` folder, its split folders' included, in a stable order."""
    return sorted(
        p
        for p in Path(folder).rglob("*")
        if p.is_file() and any(p.match(pattern) for pattern in SAVED_DATA_FILES)
    )


def fingerprint(reference: str) -> str:
    """sha256 of a dataset's bytes (a file, or the data files of a saved folder), or of its name
    if it is not on this machine."""
    path = Path(reference).expanduser()
    digest = hashlib.sha256()
    if not path.exists():
        digest.update(reference.encode())
        return digest.hexdigest()
    files = saved_data_files(path) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_fingerprint(folder: str) -> str:
    """sha256 of a model folder's small files and the names and sizes of its weight files
    (hashing tens of GB of weights at every launch would take minutes)."""
    path = Path(folder).expanduser()
    digest = hashlib.sha256()
    if not path.is_dir():
        digest.update(folder.encode())
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        if file.stat().st_size < (8 << 20):
            digest.update(file.read_bytes())
        else:
            digest.update(str(file.stat().st_size).encode())
    return digest.hexdigest()
