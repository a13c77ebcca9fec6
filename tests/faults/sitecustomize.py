"""Faults injected into the training process for tests, through PYTHONPATH (no test hooks in
the product): ADVISOR_FAULT_ENOSPC_ON_SAVE=N makes the N-th `safetensors.torch.save_file`
call write a few bytes and fail as a full disk does; ADVISOR_FAULT_NAN_FROM_STEP=N turns a
trainable weight NaN before step N, so that step's loss and gradients are NaN as a diverged
run's are."""

import errno
import importlib.abc
import importlib.util
import os
import sys

_CALL = int(os.environ.get("ADVISOR_FAULT_ENOSPC_ON_SAVE", "0"))
_NAN_FROM = int(os.environ.get("ADVISOR_FAULT_NAN_FROM_STEP", "0"))


class _SafetensorsHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "safetensors.torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module
        calls = []

        def exec_module(module):
            run_module(module)
            real = module.save_file

            def save_file(tensors, filename, metadata=None):
                calls.append(filename)
                if len(calls) == _CALL:
                    with open(filename, "wb") as handle:
                        handle.write(b"\0" * 64)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
                return real(tensors, filename, metadata=metadata)

            module.save_file = save_file

        spec.loader.exec_module = exec_module
        return spec


class _TrainerHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "transformers.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            real = module.Trainer.training_step

            def training_step(self, model, *args, **kwargs):
                if self.state.global_step + 1 >= _NAN_FROM:
                    import torch

                    with torch.no_grad():
                        next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
                return real(self, model, *args, **kwargs)

            module.Trainer.training_step = training_step

        spec.loader.exec_module = exec_module
        return spec


if _CALL:
    sys.meta_path.insert(0, _SafetensorsHook())
if _NAN_FROM:
    sys.meta_path.insert(0, _TrainerHook())
