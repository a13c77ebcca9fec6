"""The import rules, checked on every test run: `advisor.decision` (the engine) under
`advisor.views` (the renderers) under `advisor.commands` and `advisor.wizard`; `planner` pure;
`runners` never importing the user-facing program. The contracts are in pyproject.toml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "textual")


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_import_contracts_hold():
    """import-linter: planner imports no advisor/runners/torch; the decision engine no Rich,
    Textual, views, wizard, commands or runners; the views no Textual, wizard or commands."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint)], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_deciding_loads_neither_rich_nor_textual_nor_the_runners():
    """`advisor.decision` at run time, every module imported and a scenario decided."""
    loaded = _modules_after(
        "import importlib, pkgutil\nimport advisor.decision as engine\n"
        "for m in pkgutil.iter_modules(engine.__path__):\n"
        "    importlib.import_module(f'advisor.decision.{m.name}')\n"
        "from advisor.decision.answers import load_answers\n"
        "from advisor.decision.decide import decide\nfrom planner.paths import profiles_dir\n"
        "decide(load_answers(profiles_dir() / 'scenarios' / 'support-copilot.yaml'))"
    )
    assert not {name for name in loaded if name.split(".")[0] in {*HEAVY, "rich", "runners"}}


def test_plan_command_imports_no_heavy_library():
    """`advisor plan --model 7b` runs without importing torch, transformers, trl or textual."""
    loaded = _modules_after(
        "import io, contextlib\nfrom advisor.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['plan', '--model', '7b']) == 0\n"
        "    assert main(['plan', '--model', '7b', '--json']) == 0"
    )
    assert not {name for name in loaded if name.split(".")[0] in HEAVY}


def test_fit_search_imports_no_heavy_library():
    loaded = _modules_after(
        "import io, contextlib\nfrom advisor.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['plan', '--model', '7b', '--fit', '--gpu', 'rtx-4090'])"
    )
    assert not {name for name in loaded if name.split(".")[0] in HEAVY}
