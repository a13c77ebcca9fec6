"""Model specs from what a user types after `--model`: a size, a profile, a config or a Hub repo.

Everything here is offline and pure Python: no network, no huggingface_hub, no transformers. A
repo id that is not in the local Hugging Face cache is the one exception: planner.hub, imported
only then, fetches its config.json (nothing else) into that cache.
Profiles are the real `config.json` of each model plus an `_advisor` key (profiles/models/);
size shorthands map to profiles in profiles/shorthands.toml.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from planner.architectures import SUPPORTED_TYPES, ArchitectureTraits, architecture
from planner.config_fields import positive_int as _positive_int
from planner.errors import InputError
from planner.files import parse_json, read_text, short, shown
from planner.parameters import count_params
from planner.paths import profiles_dir
from planner.specs import ModelSpec

ENCODER_ONLY_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "distilbert", "albert",
     "electra", "modernbert", "camembert", "mpnet"}
)  # fmt: skip
ENCODER_DECODER_TYPES = frozenset({"t5", "mt5", "umt5", "bart", "mbart", "pegasus", "marian"})

LIST_HINT = "(see `advisor plan --list-models`)"


@dataclass(frozen=True)
class _Catalog:
    profiles: dict[str, ModelSpec]
    """profile name (file stem) -> spec"""
    lookup: dict[str, str]
    """lower-case profile name, display name, alias or HF repo id -> profile name"""
    shorthands: dict[str, str]
    """size shorthand ("7b") -> profile name"""


MAX_MODEL_TEXT = 4_096
"""Longest `--model` text: PATH_MAX on Linux; no profile name or repo id comes near it."""


def check_model_text(text: str) -> str:
    """`text` stripped, or InputError when no model name or path could look like it: empty,
    longer than MAX_MODEL_TEXT, or holding a control character (NUL, newline, tab)."""
    if not isinstance(text, str):
        raise InputError(f"the model must be text, got {short(text)}")
    query = text.strip()
    if not query:
        raise InputError(
            f"no model given: pass a size like 7b, a profile name, a config.json or a model "
            f"directory {LIST_HINT}"
        )
    if len(query) > MAX_MODEL_TEXT:
        raise InputError(
            f"model {shown(query)}: {len(query):,} characters; a model name or path has at most "
            f"{MAX_MODEL_TEXT:,}"
        )
    if not query.isprintable():
        raise InputError(
            f"model {shown(query)}: holds a control character (such as NUL, newline or tab); pass a size "
            f"like 7b, a profile name, a config.json or a model directory"
        )
    return query


def resolve_model(text: str) -> ModelSpec:
    """The spec for a shorthand, profile name or alias, HF repo id, config.json, or model directory."""
    query = check_model_text(text)
    catalog = _catalog(profiles_dir())
    key = query.lower()
    if key in catalog.shorthands:
        spec = catalog.profiles[catalog.shorthands[key]]
        return spec.model_copy(update={"source": "shorthand", "representative_of": key})
    if key in catalog.lookup:
        return catalog.profiles[catalog.lookup[key]]

    try:
        path = Path(query).expanduser()
    except RuntimeError:  # `~nosuchuser/x`: expanduser cannot find the user
        raise InputError(f"model {shown(query)}: no such user's home folder") from None
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except (OSError, ValueError):  # a name the file system cannot hold, e.g. too long
        is_dir = exists = False
    if is_dir:
        config_file = path / "config.json"
        if not os.path.lexists(config_file):
            raise InputError(f"model directory {shown(path)} has no config.json")
        return _spec_from_file(config_file, path.resolve().name, "directory")
    if exists:
        return _spec_from_file(path, _name_for_config_file(path), "config")

    cached = _hf_cache_config(query)
    if cached is not None:
        repo_id, config_file = cached
        return _spec_from_file(config_file, repo_id, "hf-cache")
    if _looks_like_path(query):
        raise InputError(f"no such file or directory: {shown(query)}")
    if _looks_like_repo_id(query):
        from planner.hub import fetch_config  # loads huggingface_hub: only for an uncached repo

        try:
            cache = hf_hub_cache()
        except RuntimeError:  # HF_HOME names `~nosuchuser/...`
            raise _unknown_model(query, catalog) from None
        config_file = fetch_config(query, cache)
        if config_file is not None:
            return _spec_from_file(config_file, query, "hub")
        raise _unknown_model(query, catalog, on_hub=True)
    raise _unknown_model(query, catalog)


def list_models() -> list[ModelSpec]:
    """Every profile's spec, grouped by family and smallest first (for `--list-models`)."""
    profiles = _catalog(profiles_dir()).profiles.values()
    return sorted(profiles, key=lambda s: (s.name.lower().rsplit("-", 1)[0], s.params))


def list_shorthands() -> dict[str, str]:
    """Size shorthand -> the profile name it stands for, as profiles/shorthands.toml says."""
    return dict(_catalog(profiles_dir()).shorthands)


def hf_hub_cache() -> Path:
    """The local Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second is the legacy name
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or "~/.cache"  # as huggingface_hub reads it
    return Path(cache_home).expanduser() / "huggingface" / "hub"


def spec_from_config(
    config: dict[str, Any], name: str, source: str, *, origin: str | None = None
) -> ModelSpec:
    """A spec from the contents of a Hugging Face config.json; `origin` names it in errors."""
    where = origin or name
    if not isinstance(config, dict):
        raise InputError(f"{where}: a config.json must hold a JSON object")
    config = {k: v for k, v in config.items() if k != "_advisor"}
    model_type = _model_type(config, where)
    notes: list[str] = []
    if model_type not in SUPPORTED_TYPES:
        _check_model_type(model_type, where)
        tower = _language_tower(config, model_type, where)
        if tower is not None:
            from planner.general import vision_params  # a VLM: torch, to count its vision side

            vision = vision_params(config, where)
            counted = f" ({vision:,} parameters)" if vision is not None else ""
            notes.append(
                f"{model_type} is a vision-language model: planned on its language tower "
                f"({tower[1]}); the vision encoder and projector{counted} are left out (add "
                "their weights, and when they train their gradients and optimizer states)"
            )
            config, model_type = tower
            name = f"{name} (text model)"
    if model_type not in SUPPORTED_TYPES:
        from planner.general import general_spec  # imports torch: only for the general path

        _check_causal(model_type, where)
        return general_spec(config, name, source, where, notes)
    traits = architecture(model_type)

    hidden = _positive_int(config, "hidden_size", where)
    layers = _positive_int(config, "num_hidden_layers", where)
    heads = _positive_int(config, "num_attention_heads", where)
    intermediate = _positive_int(config, "intermediate_size", where)
    vocab = _positive_int(config, "vocab_size", where)
    kv_heads = _positive_int(
        config, "num_key_value_heads", where, traits.num_key_value_heads or heads
    )
    if heads % kv_heads:
        raise InputError(
            f"{where}: num_attention_heads ({heads}) is not a multiple of "
            f"num_key_value_heads ({kv_heads})"
        )
    default_head_dim = traits.head_dim
    if default_head_dim is None and config.get("head_dim") is None and hidden % heads:
        raise InputError(
            f"{where}: hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}) "
            f"and there is no head_dim"
        )
    head_dim = _positive_int(config, "head_dim", where, default_head_dim or hidden // heads)
    max_positions = _positive_int(
        config, "max_position_embeddings", where, traits.max_position_embeddings
    )

    experts = top_k = 0
    if traits.experts_key is not None:
        experts_key, top_k_key = traits.experts_key, traits.experts_per_token_key
        experts = _positive_int(config, experts_key, where, traits.default_experts)
        top_k = _positive_int(config, top_k_key, where, traits.default_experts_per_token)
        if top_k > experts:
            raise InputError(f"{where}: {top_k_key} ({top_k}) exceeds {experts_key} ({experts})")
        _check_moe_layout(config, traits, layers, where)

    # Which projections carry biases, as each transformers 5.24 module builds them.
    attention_bias = out_bias = bool(config.get("attention_bias", traits.attention_bias_default))
    if traits.attention_bias == "qkv":
        attention_bias, out_bias = True, False
    elif traits.attention_bias == "none":
        attention_bias = out_bias = False
    elif traits.attention_bias == "all":  # PhiAttention: always biased
        attention_bias = out_bias = True
    mlp_bias = traits.mlp_bias_from_config and bool(config.get("mlp_bias") or False)
    mlp_bias = mlp_bias or not traits.gated_mlp  # PhiMLP's fc1 and fc2: always biased

    tied = config.get("tie_word_embeddings")
    spec = ModelSpec(
        name=name,
        source=source,
        model_type=model_type,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position_embeddings=max_positions,
        tie_word_embeddings=traits.tie_word_embeddings if tied is None else bool(tied),
        attention_bias=attention_bias,
        attention_out_bias=out_bias,
        mlp_bias=mlp_bias,
        norms_per_layer=traits.norms_per_layer,
        num_experts=experts,
        num_experts_per_tok=top_k,
        hidden_act=_activation(config, traits.hidden_act, where),
        params=0,
        hf_config=config,
        notes=notes,
    )
    return spec.model_copy(update={"params": count_params(spec)})


def _check_moe_layout(
    config: dict[str, Any], traits: ArchitectureTraits, layers: int, where: str
) -> None:
    """InputError unless the expert width, the sparse-layer step and the dense-layer list that
    planner.parameters reads from the config are usable (Qwen3-MoE's keys)."""
    if traits.expert_width_key:
        _positive_int(config, traits.expert_width_key, where, traits.default_expert_width)
    if traits.sparse_step_key:
        _positive_int(config, traits.sparse_step_key, where, 1)
    key = traits.dense_layers_key
    dense = config.get(key) if key else None
    if dense is not None and not (
        isinstance(dense, list)
        and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < layers for i in dense)
    ):
        raise InputError(
            f"{where}: '{key}' must be a list of layer indices from 0 to {layers - 1}, "
            f"got {short(dense)}"
        )


def _model_type(config: dict[str, Any], where: str) -> str | None:
    """The config's model_type: a string, or None when absent; InputError for anything else."""
    model_type = config.get("model_type")
    if model_type is None or isinstance(model_type, str):
        return model_type
    raise InputError(
        f"{where}: 'model_type' must be a string such as 'llama', got {short(model_type)}"
    )


def _check_model_type(model_type: str | None, where: str) -> None:
    """InputError for what no path plans, known without transformers: no model_type, or an
    encoder-only or encoder-decoder model (TRL's trainers the advisor runs train causal LMs)."""
    if model_type in SUPPORTED_TYPES:
        return
    if model_type is None:
        raise InputError(
            f"{where}: the config has no 'model_type'; it names the architecture, e.g. 'llama'"
        )
    _refuse_encoders(model_type, where, model_type in ENCODER_ONLY_TYPES,
                     model_type in ENCODER_DECODER_TYPES)  # fmt: skip


def _refuse_encoders(model_type: str, where: str, encoder_only: bool, seq2seq: bool) -> None:
    if seq2seq:
        raise InputError(
            f"{where}: '{model_type}' is an encoder-decoder model; the TRL trainers the advisor "
            "runs train decoder-only causal LMs"
        )
    if encoder_only:
        raise InputError(
            f"{where}: '{model_type}' is an encoder-only model; the TRL trainers the advisor runs "
            "train decoder-only causal LMs"
        )


def _language_tower(
    config: dict[str, Any], model_type: str, where: str
) -> tuple[dict[str, Any], str] | None:
    """(text config, its model_type) of a vision-language config, or None for any other. The
    config's `text_config`, else (no such key) the text config of transformers' config class."""
    inner = config.get("text_config")
    if not isinstance(inner, dict):
        from planner.general import text_config

        inner = text_config(config, where)
        if inner is None:
            return None
    inner = dict(inner)
    inner_type = _model_type(inner, f"{where}: text_config")
    if inner_type is None:  # transformers' config class fills in the text model and its defaults
        from planner.general import text_config

        inner = text_config(config, where) or inner
        inner_type = _model_type(inner, f"{where}: text_config")
    if inner_type not in SUPPORTED_TYPES:
        from planner.general import causal_lm_class

        if inner_type is None or causal_lm_class(inner_type) is None:
            raise InputError(
                f"{where}: {short(model_type)} is a multimodal model whose text model "
                f"{short(inner_type)} has no causal-LM class in transformers, so its language "
                "tower cannot be planned"
            )
    return inner, inner_type


def _check_causal(model_type: str, where: str) -> None:
    """InputError unless transformers builds `model_type` as a causal LM (the general path)."""
    from planner.general import causal_lm_class, known_model_type, model_kind

    kind = model_kind(model_type)
    _refuse_encoders(model_type, where, kind == "encoder-only", kind == "encoder-decoder")
    if causal_lm_class(model_type) is not None:
        return
    fast = ", ".join(SUPPORTED_TYPES)
    if known_model_type(model_type):
        raise InputError(
            f"{where}: model_type {short(model_type)} is not a causal LM (transformers has no "
            f"AutoModelForCausalLM class for it); the planner covers causal LMs ({fast}, and "
            "every other type transformers maps to AutoModelForCausalLM)"
        )
    raise InputError(
        f"{where}: model_type {short(model_type)} is not a model type this transformers knows; "
        f"the planner covers {fast} and every causal LM transformers knows"
    )


def _activation(config: dict[str, Any], default: str, where: str) -> str:
    act = config.get("hidden_activation") or config.get("hidden_act") or default
    if not isinstance(act, str):
        raise InputError(f"{where}: 'hidden_act' must be a string such as 'silu', got {short(act)}")
    return act


def _read_config(path: Path) -> dict[str, Any]:
    what = f"model config {shown(path)}"
    config = parse_json(read_text(path, "model config"), what)
    if not isinstance(config, dict):
        raise InputError(f"{what} does not hold a JSON object, so it is not a config.json")
    return config


def _spec_from_file(path: Path, name: str, source: str) -> ModelSpec:
    return spec_from_config(_read_config(path), name, source, origin=shown(path))


def _name_for_config_file(path: Path) -> str:
    """A readable name: the model folder (or cached repo id) for config.json, else the file stem."""
    path = path.resolve()
    if path.name != "config.json":
        return path.stem
    folder = path.parent
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.removeprefix("models--").replace("--", "/")
    return folder.name


def _looks_like_path(text: str) -> bool:
    return (
        text.endswith(".json")
        or text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or "\\" in text
    )


def _looks_like_repo_id(text: str) -> bool:
    """`org/name`: one slash with a name on each side, as every Hub model repo id has."""
    owner, _, name = text.partition("/")
    return bool(owner and name) and "/" not in name and not any(c.isspace() for c in text)


def _hf_cache_config(repo_id: str) -> tuple[str, Path] | None:
    """(repo id as cached, config.json of its main or newest snapshot) if the repo is cached."""
    if repo_id.count("/") > 1 or repo_id.startswith((".", "/", "~")):
        return None
    try:
        return _cached_config(hf_hub_cache(), repo_id)
    except (OSError, ValueError, RuntimeError):  # a name the file system cannot hold: not cached
        return None


def _cached_config(cache: Path, repo_id: str) -> tuple[str, Path] | None:
    folder_name = "models--" + repo_id.replace("/", "--")
    repo_dir = cache / folder_name
    if not repo_dir.is_dir():
        if not cache.is_dir():
            return None
        matches = [d for d in cache.iterdir() if d.name.lower() == folder_name.lower()]
        if not matches:
            return None
        repo_dir = matches[0]
    cached_id = repo_dir.name.removeprefix("models--").replace("--", "/")

    snapshots = repo_dir / "snapshots"
    main_ref = repo_dir / "refs" / "main"
    if main_ref.is_file():
        revision = read_text(main_ref, "Hugging Face cache ref", max_bytes=1024).strip()
        config_file = snapshots / revision / "config.json"
        if revision and "/" not in revision and config_file.is_file():
            return cached_id, config_file
    candidates = sorted(
        (s / "config.json" for s in snapshots.glob("*") if (s / "config.json").is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    if not candidates:
        raise InputError(
            f"{cached_id} is in the Hugging Face cache ({shown(repo_dir)}) but no snapshot has a "
            f"config.json; download it or pass a config.json path"
        )
    return cached_id, candidates[-1]


def _unknown_model(query: str, catalog: _Catalog, *, on_hub: bool = False) -> InputError:
    key = query.lower()
    candidates = list(catalog.shorthands) + list(catalog.lookup)
    suggestions: list[str] = []
    close = difflib.get_close_matches(key, candidates, n=8, cutoff=0.6) if len(key) < 200 else []
    for match in close:
        shown_name = match if match in catalog.shorthands else catalog.lookup[match]
        if shown_name not in suggestions:
            suggestions.append(shown_name)
    name = shown(query)
    if on_hub:
        from planner.hub import hub_endpoint

        where = (
            f"not a profile, not a file, and no such repo on the Hugging Face Hub "
            f"({hub_endpoint()}); check the spelling, and for a private repo set HF_TOKEN"
        )
        hint = f"; did you mean {', '.join(suggestions[:4])}?" if suggestions else ""
        return InputError(f"unknown model '{name}': {where}{hint} {LIST_HINT}")
    if "/" in query:
        try:
            cache = shown(hf_hub_cache())
        except RuntimeError:  # HF_HOME names `~nosuchuser/...`
            cache = "no usable cache folder"
        where = f"not a profile, not a file, and not in the local Hugging Face cache ({cache})"
        hint = f"; did you mean {', '.join(suggestions[:4])}?" if suggestions else ""
        return InputError(f"unknown model '{name}': {where}{hint} {LIST_HINT}")
    if suggestions:
        return InputError(
            f"unknown model '{name}'; did you mean {', '.join(suggestions[:4])}? {LIST_HINT}"
        )
    return InputError(
        f"unknown model '{name}'; pass a size like 7b, a profile name, a config.json or a "
        f"model directory {LIST_HINT}"
    )


@lru_cache(maxsize=8)
def _catalog(directory: Path) -> _Catalog:
    """All profiles under `directory`, read once per folder (resolve_model("7b") takes milliseconds)."""
    profiles: dict[str, ModelSpec] = {}
    lookup: dict[str, str] = {}
    for path in sorted((directory / "models").glob("*.json")):
        config = _read_config(path)
        meta = config.get("_advisor") or {}
        if not isinstance(meta, dict):
            raise InputError(
                f"{path}: '_advisor' must be an object with display_name, hf_repo, aliases"
            )
        profile = path.stem.lower()
        display = str(meta.get("display_name") or path.stem)
        profiles[profile] = spec_from_config(config, display, "profile", origin=str(path))
        keys = [profile, display, *(meta.get("aliases") or [])]
        if meta.get("hf_repo"):
            keys.append(str(meta["hf_repo"]))
        for key in {str(k).lower() for k in keys}:
            if lookup.get(key, profile) != profile:
                raise InputError(
                    f"{path}: the name '{key}' is also claimed by profile '{lookup[key]}'; "
                    f"names and aliases must be unique"
                )
            lookup[key] = profile
    return _Catalog(profiles, lookup, _read_shorthands(directory / "shorthands.toml", profiles))


def _read_shorthands(path: Path, profiles: dict[str, ModelSpec]) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("shorthands", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    shorthands: dict[str, str] = {}
    for size, profile in table.items():
        if str(profile).lower() not in profiles:
            raise InputError(
                f"{path}: shorthand '{size}' names '{profile}', which is not a profile in "
                f"{path.parent / 'models'}"
            )
        shorthands[str(size).lower()] = str(profile).lower()
    return shorthands
