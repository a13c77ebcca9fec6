"""Loading a training dataset from where users keep one: a local file, a saved folder, the HF cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

from planner.errors import PlanError

LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""File suffix -> the `datasets` builder that reads it."""


def load_train_split(reference: str):
    """A `datasets.Dataset`: a JSONL/JSON/CSV/Parquet file, a `save_to_disk` folder, or a
    dataset id already in the local Hugging Face cache (offline)."""
    import datasets

    path = Path(reference).expanduser()
    if path.is_file():
        loader = LOADERS.get(path.suffix.lower())
        if loader is None:
            raise PlanError(f"dataset {reference}: unsupported format (jsonl, json, csv, parquet)")
        return datasets.load_dataset(loader, data_files=str(path), split="train")
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise PlanError(f"dataset folder {reference} has no 'train' split")
            return loaded["train"]
        return loaded
    if path.suffix.lower() in LOADERS or reference.startswith((".", "/", "~")):
        raise PlanError(f"dataset {reference}: no such file or folder")
    try:
        return datasets.load_dataset(reference, split="train")
    except Exception as error:  # datasets raises many kinds; the user needs one message
        raise PlanError(
            f"dataset {reference!r} is not a file, a saved folder, or in the local HF cache "
            f"({type(error).__name__})"
        ) from None


def fingerprint(reference: str) -> str:
    """sha256 of a dataset's bytes (every file of a folder), or of its name if it is remote."""
    path = Path(reference).expanduser()
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not path.exists():
        digest.update(reference.encode())
        return digest.hexdigest()
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
