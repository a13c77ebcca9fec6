"""Fuzzing `advisor check-data` (and `advisor plan --dataset`) with generated dataset files.

Whatever the file or path, the command answers with a report (status 0 or 1) or one line on
stderr (status 2): no exception, no traceback, no hang. Well-formed files of string columns are
never refused, and `--json` output always parses.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advisor.cli import main
from runners.tiny import ensure_model

METHODS = ["sft", "dpo", "ppo", "grpo", "rloo", "kto", "orpo", "simpo", "reward"]
COLUMNS = ["prompt", "chosen", "rejected", "completion", "label", "text", "messages"]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
"""Examples per test: 40 keeps the file under 30 s on two cores; raise it to hunt."""
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Text as users' data holds it: any unicode (emoji, RTL, combining marks), markup, controls.
texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["[/bold]", "[red]x", "\x1b[2J", "a\r\nb", "\u2028", "🙂" * 3, "<|eos|>"]),
    st.builds(lambda n: "long " * n, st.integers(1, 40_000)),  # huge fields, up to ~200 KB
)
turns = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]), "content": texts}
    ),
    min_size=1,
    max_size=3,
)
well_formed_rows = st.lists(
    st.fixed_dictionaries({c: texts for c in ("prompt", "chosen", "rejected", "completion")}),
    min_size=1,
    max_size=6,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
any_rows = st.lists(
    st.dictionaries(
        st.sampled_from(COLUMNS) | texts, json_values | turns | st.booleans(), max_size=5
    ),
    max_size=6,
)


def _nested(depth: int) -> bytes:
    return b'{"prompt": ' + b"[" * depth + b"]" * depth + b', "chosen": "a", "rejected": "b"}\n'


# Ways a file goes wrong; each takes the well-formed bytes and returns the broken ones.
MUTATIONS = {
    "none": lambda data, n: data,
    "truncate": lambda data, n: data[: n % (len(data) + 1)],
    "garbage": lambda data, n: data[: n % (len(data) + 1)] + bytes([n % 256]) * 7 + data[n:],
    "binary": lambda data, n: random.Random(n).randbytes(1 + n % 300),
    "bom": lambda data, n: b"\xef\xbb\xbf" + data,
    "crlf": lambda data, n: data.replace(b"\n", b"\r\n"),
    "latin1": lambda data, n: data + b"caf\xe9\n",
    "nul": lambda data, n: data.replace(b"a", b"\x00", 3),
    "surrogate": lambda data, n: data + b'{"prompt": "\\udc80x"}\n',
    "nested": lambda data, n: data + _nested((20, 40, 70, 5000)[n % 4]),
    "scalar": lambda data, n: b"5",
    "empty": lambda data, n: b"",
}


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _json(rows: list[dict]) -> bytes:
    return json.dumps(rows, ensure_ascii=False).encode()


def _csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    columns = sorted({c for row in rows for c in row}) or ["prompt"]
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()} for row in rows
    )
    return out.getvalue().encode()


def _parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    try:
        pq.write_table(pa.Table.from_pylist(rows), out)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):  # not one Arrow schema
        out = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([{"prompt": json.dumps(r)} for r in rows]), out)
    return out.getvalue()


WRITERS = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return ensure_model(tmp_path_factory.getbasetemp() / "tiny-llama-fuzz")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder for the generated files, with `datasets`' cache inside it."""
    import datasets

    folder = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(folder / "hf-cache"))
        yield folder


_names = itertools.count()


def _fresh(workdir: Path, suffix: str) -> Path:
    """A new file name per example: `datasets` caches by path, so no name is reused."""
    return workdir / f"case-{next(_names)}{suffix}"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)  # an exception escaping here fails the test with its traceback
    return rc, out.getvalue(), err.getvalue()


def _check(path: str, method: str, as_json: bool, model: Path | None) -> int:
    argv = ["check-data", "--dataset", path, "--method", method]
    argv += ["--json"] if as_json else []
    argv += ["--model", str(model)] if model is not None else []
    rc, out, err = _run(argv)
    assert rc in (0, 1, 2), (rc, err)
    assert "Traceback" not in err
    if rc == 2:
        assert len(err.splitlines()) == 1 and err.startswith("advisor: error: "), err
    elif as_json:
        report = json.loads(out)
        assert report["method"] == method and report["rows"] >= 0
    plan_rc, _, plan_err = _run(["plan", "--model", "7b", "--dataset", path, "--json"])
    assert plan_rc in (0, 2) and "Traceback" not in plan_err, plan_err
    return rc


@SETTINGS
@given(
    suffix=st.sampled_from(sorted(WRITERS)),
    rows=any_rows,
    mutation=st.sampled_from(sorted(MUTATIONS)),
    n=st.integers(0, 10_000),
    method=st.sampled_from(METHODS),
    as_json=st.booleans(),
    with_model=st.booleans(),
)
def test_any_generated_file_gets_a_report_or_one_line(
    workdir, tiny_model, suffix, rows, mutation, n, method, as_json, with_model
):
    path = _fresh(workdir, suffix)
    path.write_bytes(MUTATIONS[mutation](WRITERS[suffix](rows), n))
    _check(str(path), method, as_json, tiny_model if with_model else None)


@SETTINGS
@given(
    suffix=st.sampled_from(sorted(WRITERS)),
    rows=well_formed_rows | st.lists(st.fixed_dictionaries({"prompt": turns}), min_size=1),
    layout=st.sampled_from(["plain", "bom", "crlf"]),
    method=st.sampled_from(METHODS),
    with_model=st.booleans(),
)
def test_well_formed_files_are_never_refused(
    workdir, tiny_model, suffix, rows, layout, method, with_model
):
    data = WRITERS[suffix](rows)
    if layout == "bom" and suffix != ".parquet":
        data = b"\xef\xbb\xbf" + data
    if layout == "crlf" and suffix == ".jsonl":
        data = data.replace(b"\n", b"\r\n")
    path = _fresh(workdir, suffix)
    path.write_bytes(data)
    assert _check(str(path), method, True, tiny_model if with_model else None) in (0, 1)


def _special(workdir: Path, kind: str) -> str:
    base = _fresh(workdir, "")
    if kind == "folder":
        base.mkdir()
        return str(base)
    if kind == "fifo":
        os.mkfifo(base.with_suffix(".jsonl"))
        return str(base.with_suffix(".jsonl"))
    if kind == "unreadable":  # root reads it anyway; anyone else gets a one-line refusal
        path = base.with_suffix(".jsonl")
        path.write_bytes(_jsonl([{"prompt": "p", "chosen": "a", "rejected": "b"}]))
        path.chmod(0)
        return str(path)
    if kind == "missing":
        return str(base.with_suffix(".jsonl"))
    if kind == "saved":
        import datasets

        datasets.Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}]).save_to_disk(
            str(base)
        )
        return str(base)
    return {"dev-null": "/dev/null", "dev-zero": "/dev/zero", "root": "/", "dot": "."}[kind]


@settings(SETTINGS, max_examples=max(20, EXAMPLES // 2))
@given(
    kind=st.sampled_from(
        ["folder", "fifo", "unreadable", "missing", "saved", "dev-null", "dev-zero", "root", "dot"]
    ),
    method=st.sampled_from(METHODS),
    as_json=st.booleans(),
)
def test_special_paths_are_answered_at_once(workdir, kind, method, as_json):
    rc = _check(_special(workdir, kind), method, as_json, None)
    if kind in ("folder", "fifo", "missing", "dev-null", "dev-zero", "root", "dot"):
        assert rc == 2
