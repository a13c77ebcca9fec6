"""GPU specs from `profiles/gpus/*.toml`: look-up by name or alias, with near-name suggestions."""

from __future__ import annotations

import difflib
import functools
import re
import tomllib

from planner.constants import GIB, MIB
from planner.errors import InputError
from planner.files import short
from planner.paths import profiles_dir
from planner.specs import GpuSpec


def _key(name: str) -> str:
    """Normalise a GPU name for look-up: lower case, spaces and underscores as hyphens."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


@functools.cache
def _catalogue() -> dict[str, GpuSpec]:
    specs: dict[str, GpuSpec] = {}
    for path in sorted((profiles_dir() / "gpus").glob("*.toml")):
        with path.open("rb") as handle:
            data = tomllib.load(handle)
        memory_bytes = int(data["memory_mib"]) * MIB
        spec = GpuSpec(
            name=data["name"],
            memory_bytes=memory_bytes,
            memory_gib=round(memory_bytes / GIB, 2),
            bf16_tflops=data["bf16_tflops"],
            fp16_tflops=data["fp16_tflops"],
            fp32_tflops=data.get("fp32_tflops", 0.0),
            hbm_gbps=data["hbm_gbps"],
            interconnect_gbps=data["interconnect_gbps"],
            interconnect=data.get("interconnect", ""),
            internode_gbps=data.get("internode_gbps"),
            internode=data.get("internode", ""),
            supports_bf16=data.get("supports_bf16", True),
            aliases=data.get("aliases", []),
        )
        for name in [path.stem, spec.name, *spec.aliases]:
            specs[_key(name)] = spec
    return specs


def list_gpus() -> list[GpuSpec]:
    """Every GPU profile, once each, in file order."""
    seen: dict[str, GpuSpec] = {}
    for spec in _catalogue().values():
        seen.setdefault(spec.name, spec)
    return list(seen.values())


def resolve_gpu(name: str) -> GpuSpec:
    """The GPU profile for a name or alias (`a100-80gb`, `H100`, `nvidia a100-sxm4-80gb`)."""
    catalogue = _catalogue()
    key = _key(name)
    if key in catalogue:
        return catalogue[key]
    # NVML names such as "NVIDIA A100-SXM4-80GB" or "NVIDIA H100 80GB HBM3".
    stripped = key.removeprefix("nvidia-").removeprefix("tesla-")
    if stripped in catalogue:
        return catalogue[stripped]
    near = (
        difflib.get_close_matches(key, list(catalogue), n=3, cutoff=0.5) if len(key) < 200 else []
    )
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    names = ", ".join(spec.name.lower() for spec in list_gpus())
    raise InputError(f"unknown GPU {short(name)}{hint} (known: {names}; add one in profiles/gpus/)")


_COUNTED = re.compile(r"^\s*(\d{1,30})\s*[x×*]\s*(\S.*)$", re.IGNORECASE)
"""`8x h100`, `2 × RTX 4090`, `4*l40s`: a count, a times sign, then the GPU's name."""


def counted_gpu(text: str) -> tuple[GpuSpec, int]:
    """A GPU name with an optional count in front (`8x h100-80gb`, `1x 4090`, `rtx 4090`) as
    its profile and the count (1 when none is written); the name is read as `resolve_gpu` reads
    `--gpu`, so an answers file accepts every spelling `advisor plan` does."""
    match = _COUNTED.match(text) if len(text) <= 200 else None
    if match:
        return resolve_gpu(match.group(2)), int(match.group(1))
    return resolve_gpu(text), 1


def custom_gpu(memory_bytes: int, name: str, like: GpuSpec | None = None) -> GpuSpec:
    """A GPU seen by NVML but missing from the profiles: its memory, another card's speeds."""
    base = like or resolve_gpu("a100-80gb")
    return base.model_copy(
        update={
            "name": name,
            "memory_bytes": memory_bytes,
            "memory_gib": round(memory_bytes / GIB, 2),
            "aliases": [],
        }
    )
