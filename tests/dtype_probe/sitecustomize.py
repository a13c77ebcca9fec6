"""Records, through PYTHONPATH (no test hooks in the product), the dtypes of the model a
`transformers.Trainer` is built with: ADVISOR_DTYPE_PROBE=FILE writes
{"frozen": [...], "trainable": [...]} (the sorted dtypes of the frozen and the trainable
parameters) to FILE when the first Trainer's __init__ returns."""

import importlib.abc
import importlib.util
import json
import os
import sys

_FILE = os.environ.get("ADVISOR_DTYPE_PROBE", "")


def _record(model) -> None:
    seen: dict[str, set[str]] = {"frozen": set(), "trainable": set()}
    for param in model.parameters():
        kind = "trainable" if param.requires_grad else "frozen"
        seen[kind].add(str(param.dtype).removeprefix("torch."))
    with open(_FILE, "w", encoding="utf-8") as handle:
        json.dump({kind: sorted(dtypes) for kind, dtypes in seen.items()}, handle)


class _TrainerHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "transformers.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            real = module.Trainer.__init__

            def __init__(self, *args, **kwargs):
                real(self, *args, **kwargs)
                if not os.path.exists(_FILE):
                    _record(self.model)

            module.Trainer.__init__ = __init__

        spec.loader.exec_module = exec_module
        return spec


if _FILE:
    sys.meta_path.insert(0, _TrainerHook())
