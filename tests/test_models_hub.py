"""`--model org/name` from the Hugging Face Hub: config.json only, into the normal HF cache.

No test reaches the network: the cache is a tmp folder and the Hub is a tiny `http.server` on
localhost that answers the HEAD and GET `hf_hub_download` makes for a config.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from planner.errors import InputError
from planner.models import resolve_model
from tests.test_plan_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_token"
TINY_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
}


class FakeHub(BaseHTTPRequestHandler):
    """Answers /{org}/{name}/resolve/main/{file} as the Hub does: `acme/tiny` is public,
    `acme/gated` needs the token, `acme/gguf-only` has no config.json, anything else is RepoNotFound; every path is recorded."""

    requests: ClassVar[list[tuple[str, str, str | None]]] = []

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        auth = self.headers.get("Authorization")
        self.requests.append((self.command, self.path, auth))
        repo, _, rest = self.path.lstrip("/").partition("/resolve/main/")
        if repo == "acme/gated" and auth != f"Bearer {TOKEN}":
            return self._error(401, "GatedRepo", body)
        if repo not in ("acme/tiny", "acme/gated", "acme/gguf-only"):
            return self._error(401, "RepoNotFound", body)
        if rest != "config.json" or repo == "acme/gguf-only":
            return self._error(404, "EntryNotFound", body)
        content = json.dumps(TINY_CONFIG).encode()
        self.send_response(200)
        self.send_header("ETag", f'"{hashlib.sha1(content).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if body:
            self.wfile.write(content)

    def _error(self, status: int, code: str, body: bool) -> None:
        content = json.dumps({"error": code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty HF cache of this test's own; no token, Hub online (conftest sets it offline)."""
    folder = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return folder


@pytest.fixture
def hub(cache, monkeypatch):
    """The fake Hub's request log, with HF_ENDPOINT pointing at it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once, at its import
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache.parent / "no-token"))  # no login
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    FakeHub.requests = []
    yield FakeHub.requests
    server.shutdown()
    server.server_close()


def test_a_repo_id_in_the_local_hf_cache_plans_offline(cache, monkeypatch):
    snapshot = cache / "models--acme--tiny" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(TINY_CONFIG))
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = resolve_model("acme/tiny")
    assert (spec.name, spec.source, spec.hidden_size) == ("acme/tiny", "hf-cache", 64)


def test_a_hub_repo_fetches_only_its_config_then_plans_offline_from_the_cache(hub, cache, capsys):
    spec = resolve_model("acme/tiny")
    assert (spec.name, spec.source, spec.num_layers) == ("acme/tiny", "hub", 2)
    assert not capsys.readouterr().err  # no progress bar, no warning
    assert {path for _, path, _ in hub} == {"/acme/tiny/resolve/main/config.json"}
    assert [method for method, _, _ in hub] == ["HEAD", "HEAD", "GET"]
    snapshot = cache / "models--acme--tiny" / "snapshots" / COMMIT / "config.json"
    assert json.loads(snapshot.read_text()) == TINY_CONFIG
    assert (cache / "models--acme--tiny" / "refs" / "main").read_text() == COMMIT

    os.environ["HF_HUB_OFFLINE"] = "1"  # monkeypatch (via `cache`) restores it
    code, out, err = run_cli(capsys, "plan", "--model", "acme/tiny", "--json")
    assert code == 0, err
    assert json.loads(out)["model"]["name"] == "acme/tiny"
    assert len(hub) == 3  # the second plan asked the Hub nothing


def test_a_gated_repo_says_accept_the_licence_and_set_hf_token(hub, monkeypatch, capsys):
    code, out, err = run_cli(capsys, "plan", "--model", "acme/gated")
    assert code == 2 and not out
    message = err.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "'acme/gated' is gated" in message
    assert f"{os.environ['HF_ENDPOINT']}/acme/gated" in message  # the page to accept it on
    assert "HF_TOKEN" in message and "hf auth login" in message

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert resolve_model("acme/gated").name == "acme/gated"
    assert hub[-1] == ("GET", "/acme/gated/resolve/main/config.json", f"Bearer {TOKEN}")


def test_a_repo_the_hub_does_not_have_is_one_line(hub, capsys):
    code, out, err = run_cli(capsys, "plan", "--model", "acme/no-such-model")
    assert code == 2 and not out
    message = err.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "unknown model 'acme/no-such-model'" in message
    assert "no such repo on the Hugging Face Hub" in message
    assert [path for _, path, _ in hub] == ["/acme/no-such-model/resolve/main/config.json"]


def test_a_repo_without_a_config_json_is_one_line_and_caches_nothing(hub, cache):
    with pytest.raises(InputError) as caught:
        resolve_model("acme/gguf-only")
    message = str(caught.value)
    assert "'acme/gguf-only' on the Hugging Face Hub has no config.json" in message
    assert "\n" not in message and not cache.exists()


def test_offline_with_nothing_cached_says_go_online_once_or_pass_a_folder(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as caught:
        resolve_model("acme/tiny")
    message = str(caught.value)
    assert "HF_HUB_OFFLINE" in message and "go online once" in message
    assert "local model folder or config.json" in message and "\n" not in message


def test_an_unreachable_hub_with_nothing_cached_is_one_line(cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    with pytest.raises(InputError) as caught:
        resolve_model("acme/tiny")
    message = str(caught.value)
    assert "cannot reach the Hugging Face Hub (http://127.0.0.1:9)" in message
    assert "go online once" in message and "\n" not in message


def test_planning_without_an_uncached_repo_id_never_imports_huggingface_hub(cache):
    snapshot = cache / "models--acme--tiny" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(TINY_CONFIG))
    code = (
        "import io, contextlib, json, sys\nfrom advisor.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for model in ('7b', 'acme/tiny', 'no-such-model'):\n"
        "        try:\n            main(['plan', '--model', model])\n"
        "        except SystemExit:\n            pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}
    assert "huggingface_hub" not in loaded


def test_a_hub_id_with_only_its_config_cached_plans_but_is_not_launched(hub, cache, monkeypatch):
    from huggingface_hub import constants

    from runners.launch import local_model

    resolve_model("acme/tiny")  # the plan caches config.json alone
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read once, at its import
    with pytest.raises(InputError) as caught:
        local_model("acme/tiny")
    message = str(caught.value)
    assert "enough to plan but not to launch" in message
    assert "hf download acme/tiny --local-dir models/tiny" in message
    with pytest.raises(InputError, match="a Hub id alone plans but cannot be launched"):
        local_model("acme/never-planned")
