"""Model specs: profiles, shorthands, config files and the HF cache, and exact parameter counts.

Counts are checked against the real transformers / peft modules built on the meta device,
which allocates nothing, so even the 70B profiles build in well under a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

from planner import parameters
from planner.architectures import ARCHITECTURES, ArchitectureTraits
from planner.errors import InputError
from planner.models import (
    hf_hub_cache,
    list_models,
    list_shorthands,
    resolve_model,
    spec_from_config,
)
from planner.paths import profiles_dir
from planner.specs import ModelSpec, PlanRequest
from tests.tiny_architectures import ARCHITECTURE_CONFIGS

ROOT = Path(__file__).resolve().parent.parent
PROFILE_FILES = sorted((profiles_dir() / "models").glob("*.json"))
PROFILES = [p.stem for p in PROFILE_FILES]
TARGETS = ["qv", "attention", "all-linear"]

PUBLISHED_COUNTS = {
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "mistral-7b-v0.1": 7_241_732_096,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-0.5b": 494_032_768,
    "phi-2": 2_779_683_840,
    "phi-1.5": 1_418_270_720,
    "gemma-3-1b-it": 999_885_952,
}

MOE_PUBLISHED = {
    # Model card figures in billions, to the digits they give: (total, second figure).
    # Qwen3 cards: the non-embedding count (embedding and lm_head out).
    "qwen3-30b-a3b": ((30.5, 1), (29.9, 1)),  # Qwen/Qwen3-30B-A3B
    "qwen3-235b-a22b": ((235, 0), (234, 0)),  # Qwen/Qwen3-235B-A22B
    # gpt-oss model card (OpenAI 2025, table 1): active per token, the unembedding counted and
    # the embedding not.
    "gpt-oss-20b": ((20.91, 2), (3.61, 2)),
    "gpt-oss-120b": ((116.83, 2), (5.13, 2)),
}

REPRESENTATIVES = {
    "0.5b": "qwen2.5-0.5b",
    "1b": "llama-3.2-1b",
    "1.5b": "qwen2.5-1.5b",
    "3b": "llama-3.2-3b",
    "7b": "llama-2-7b",
    "8b": "llama-3.1-8b",
    "13b": "llama-2-13b",
    "14b": "qwen2.5-14b",
    "32b": "qwen2.5-32b",
    "70b": "llama-3.1-70b",
    "72b": "qwen2.5-72b",
}

TINY_LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 256,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,  # phi3 defaults to 32000, outside this vocabulary
}


def hf_config(config: dict, **overrides):
    """A transformers config object from a config.json dict."""
    fields = {k: v for k, v in config.items() if k not in ("model_type", "auto_map", "_advisor")}
    return AutoConfig.for_model(config["model_type"], **fields, **overrides)


def build_on_meta(config: dict, auto_class=AutoModelForCausalLM, **overrides) -> torch.nn.Module:
    with torch.device("meta"):
        return auto_class.from_config(hf_config(config, **overrides))


@cache
def causal_lm(profile: str) -> torch.nn.Module:
    return build_on_meta(resolve_model(profile).hf_config)


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


# --- exact counts -------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_count_equals_transformers_model_on_meta(profile):
    spec = resolve_model(profile)
    assert spec.params == parameters.count_params(spec) == numel(causal_lm(profile))


@pytest.mark.parametrize(("profile", "published"), PUBLISHED_COUNTS.items())
def test_profile_count_equals_published_count(profile, published):
    assert resolve_model(profile).params == published


@pytest.mark.parametrize("profile", PROFILES)
def test_largest_layer_is_deepspeeds_largest_module(profile):
    model = causal_lm(profile)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    assert parameters.largest_layer_params(resolve_model(profile)) == largest


@pytest.mark.parametrize("profile", PROFILES)
def test_decoder_linear_params_count_the_linear_weights_bitsandbytes_would_quantize(profile):
    layers = causal_lm(profile).model.layers
    linear = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
    assert parameters.decoder_linear_params(resolve_model(profile)) == linear


@pytest.mark.parametrize(
    "profile", ["llama-3.2-1b", "qwen2.5-0.5b", "gemma-2-2b", "phi-3-mini-4k", "phi-2"]
)
def test_linear_shapes_name_the_real_modules_of_a_decoder_layer(profile):
    layer = causal_lm(profile).model.layers[0]
    for name, n_in, n_out in parameters.linear_shapes(resolve_model(profile)):
        module = layer.get_submodule(name)
        assert (module.in_features, module.out_features) == (n_in, n_out), name


def test_decoder_layer_params_equal_one_real_layer():
    for profile in ("llama-2-7b", "qwen2.5-7b", "gemma-2-9b", "mixtral-8x7b"):
        layer = causal_lm(profile).model.layers[0]
        assert parameters.decoder_layer_params(resolve_model(profile)) == numel(layer), profile


def test_moe_active_params_count_only_the_routed_experts():
    spec = resolve_model("mixtral-8x7b")
    idle_experts = spec.num_layers * 6 * 3 * spec.hidden_size * spec.intermediate_size
    assert parameters.active_params(spec) == spec.params - idle_experts
    assert parameters.active_params(resolve_model("7b")) == resolve_model("7b").params


@pytest.mark.parametrize(("profile", "published"), MOE_PUBLISHED.items())
def test_moe_profiles_total_and_active_counts_round_to_their_model_cards(profile, published):
    (total, total_digits), (second, second_digits) = published
    spec = resolve_model(profile)
    embedding = parameters.embedding_params(spec)
    if profile.startswith("gpt-oss"):
        counted = parameters.active_params(spec) - embedding
    else:
        counted = spec.params - embedding - parameters.lm_head_params(spec)
    assert round(spec.params / 1e9, total_digits) == total
    assert round(counted / 1e9, second_digits) == second


@pytest.mark.parametrize("profile", ["qwen3-30b-a3b", "gpt-oss-20b", "mixtral-8x7b"])
def test_moe_time_counts_the_active_experts_and_memory_all_of_them(profile):
    from planner.memory import base_weight_bytes
    from planner.time_model import matmul_params

    spec = resolve_model(profile)
    request = PlanRequest(tuning="full", precision="bf16-true")
    embedding = parameters.embedding_params(spec)
    assert matmul_params(spec) == parameters.active_params(spec) - embedding < spec.params / 3
    assert base_weight_bytes(spec, request) == 2 * spec.params


@pytest.mark.parametrize(
    ("label", "config", "sparse_layers"),
    [
        ("qwen3_moe", {**TINY_LLAMA, "model_type": "qwen3_moe", "num_hidden_layers": 4, "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 48, "mlp_only_layers": [1]}, 3),
        ("qwen3_moe step 2", {**TINY_LLAMA, "model_type": "qwen3_moe", "num_hidden_layers": 4, "num_experts": 8, "num_experts_per_tok": 2, "decoder_sparse_step": 2}, 2),
        ("gpt_oss", {**TINY_LLAMA, "model_type": "gpt_oss", "num_local_experts": 8, "num_experts_per_tok": 2}, 2),
    ],
)  # fmt: skip
def test_moe_active_params_drop_the_idle_experts_of_the_sparse_layers(label, config, sparse_layers):
    """Active = all parameters less, in each sparse layer, the experts a token does not run:
    counted here from the real modules (one expert's share of the stacked parameters)."""
    spec = spec_from_config(config, label, "config")
    model = build_on_meta(config)
    experts = [m for m in model.modules() if type(m).__name__.endswith("Experts")]
    assert len(experts) == parameters.moe_layer_count(spec) == sparse_layers
    one_expert = numel(experts[0]) // spec.num_experts
    idle = sparse_layers * (spec.num_experts - spec.num_experts_per_tok) * one_expert
    assert parameters.active_params(spec) == numel(model) - idle


@pytest.mark.parametrize(
    ("label", "config"),
    [
        ("llama with attention and mlp biases", {**TINY_LLAMA, "attention_bias": True, "mlp_bias": True}),
        ("llama with tied embeddings", {**TINY_LLAMA, "tie_word_embeddings": True}),
        ("qwen2 with qkv bias", {**TINY_LLAMA, "model_type": "qwen2"}),
        ("qwen3 with q/k norms", {**TINY_LLAMA, "model_type": "qwen3", "head_dim": 32}),
        ("gemma (v1)", {**TINY_LLAMA, "model_type": "gemma", "head_dim": 16}),
        ("gemma2 with defaults", {**TINY_LLAMA, "model_type": "gemma2", "head_dim": 16}),
        ("phi3 fused projections", {**TINY_LLAMA, "model_type": "phi3"}),
        ("olmo2 with grouped kv heads and biases", {**TINY_LLAMA, "model_type": "olmo2", "attention_bias": True}),
        ("phi with grouped kv heads and q/k layernorms", {**TINY_LLAMA, "model_type": "phi", "qk_layernorm": True}),
        ("mistral without kv heads", {k: v for k, v in TINY_LLAMA.items() if k != "num_key_value_heads"} | {"model_type": "mistral", "num_attention_heads": 8}),
        ("mixtral 4 experts", {**TINY_LLAMA, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}),
        ("qwen3_moe with defaults", {**TINY_LLAMA, "model_type": "qwen3_moe"}),
        ("qwen3_moe sparse every other layer", {**TINY_LLAMA, "model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 48, "decoder_sparse_step": 2}),
        ("qwen3_moe with dense layers listed", {**TINY_LLAMA, "model_type": "qwen3_moe", "num_hidden_layers": 3, "num_experts": 4, "num_experts_per_tok": 1, "mlp_only_layers": [0, 2]}),
        ("gpt_oss with defaults", {**TINY_LLAMA, "model_type": "gpt_oss", "num_local_experts": 4, "head_dim": 16}),
        ("gpt_oss without attention biases", {**TINY_LLAMA, "model_type": "gpt_oss", "num_local_experts": 4, "num_experts_per_tok": 2, "attention_bias": False}),
    ],
)  # fmt: skip
def test_spec_from_config_counts_architecture_variants_exactly(label, config):
    spec = spec_from_config(config, label, "config")
    assert spec.params == numel(build_on_meta(config)), label


# --- architecture traits --------------------------------------------------------------------


def test_every_architecture_has_a_tiny_config():
    assert set(ARCHITECTURE_CONFIGS) == set(ARCHITECTURES)


@pytest.mark.parametrize("traits", ARCHITECTURES.values(), ids=list(ARCHITECTURES))
def test_architecture_defaults_are_the_transformers_config_defaults(traits: ArchitectureTraits):
    """The defaults a record states for keys a config.json may leave out are its config class's."""
    defaults = CONFIG_MAPPING[traits.model_type]()
    assert defaults.max_position_embeddings == traits.max_position_embeddings
    assert defaults.tie_word_embeddings == traits.tie_word_embeddings
    kv_heads = traits.num_key_value_heads or defaults.num_attention_heads
    assert defaults.num_key_value_heads == kv_heads
    if traits.head_dim is not None:
        assert defaults.head_dim == traits.head_dim
    activation = getattr(defaults, "hidden_activation", None) or defaults.hidden_act
    assert activation == traits.hidden_act
    if traits.experts_key is not None:
        assert getattr(defaults, traits.experts_key) == traits.default_experts
        assert getattr(defaults, traits.experts_per_token_key) == traits.default_experts_per_token
    if traits.final_logit_softcapping is not None:
        assert getattr(defaults, traits.final_logit_softcapping)


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_tiny_config_of_each_architecture_is_counted_exactly(model_type):
    """Counts and module names from the traits match the real model, for every record."""
    config = ARCHITECTURE_CONFIGS[model_type]
    spec = spec_from_config(config, model_type, "config")
    model = build_on_meta(config)
    assert spec.params == numel(model)
    # The last layer: sparse in every MoE config here (Qwen3-MoE's tiny one keeps layer 0 dense).
    layer = model.model.layers[-1]
    assert parameters.decoder_layer_params(spec) == numel(layer)
    for name, n_in, n_out in parameters.linear_shapes(spec):
        if ".experts." not in name:  # stacked 3-D expert parameters, no module per expert
            assert tuple(layer.get_submodule(name).weight.shape) == (n_out, n_in), name


# --- LoRA and the extra heads ---------------------------------------------------------------


@pytest.mark.parametrize("targets", TARGETS)
@pytest.mark.parametrize(
    "profile",
    [
        "llama-3.2-1b",
        "qwen2.5-0.5b",
        "gemma-2-2b",
        "mixtral-8x7b",
        "phi-3-mini-4k",
        "phi-2",
        "olmo-2-1124-7b",
    ],
)
def test_lora_params_equal_peft_trainable_params_on_meta(profile, targets):
    spec = resolve_model(profile)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config(spec.hf_config))
        config = LoraConfig(r=16, target_modules=parameters.lora_target_modules(spec, targets))
        peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert parameters.lora_params(spec, 16, targets) == trainable


@pytest.mark.parametrize("profile", ["qwen3-30b-a3b", "gpt-oss-20b"])
def test_moe_all_linear_lora_equals_peft_trainable_params_on_meta(profile):
    """peft's MoE mapping: Qwen3-MoE's experts and router adapted, GPT-OSS's attention alone (qv
    and attention targets are the dense path, checked above and on the tiny configs)."""
    test_lora_params_equal_peft_trainable_params_on_meta(profile, "all-linear")


def test_lora_rejects_unknown_targets_and_bad_rank():
    with pytest.raises(InputError, match="unknown LoRA targets 'mlp'"):
        parameters.lora_params(resolve_model("7b"), 16, "mlp")
    with pytest.raises(InputError, match="rank"):
        parameters.lora_params(resolve_model("7b"), 0, "qv")


@pytest.mark.parametrize("profile", ["llama-2-7b", "qwen2.5-0.5b"])
def test_reward_and_value_models_equal_sequence_classifier_with_one_label(profile):
    spec = resolve_model(profile)
    model = build_on_meta(spec.hf_config, AutoModelForSequenceClassification, num_labels=1)
    assert parameters.reward_model_params(spec) == numel(model)
    assert parameters.value_model_params(spec) == numel(model)


def test_full_reward_training_updates_the_classifier_it_holds():
    """The plan's trainable count, the optimizer states in memory and the all-reduce volume
    are one quantity: the sequence classifier's parameters (no lm_head, a 1-output score)."""
    from planner.memory import estimate_memory
    from planner.plan import estimate

    spec = resolve_model("llama-2-7b")
    model = build_on_meta(spec.hf_config, AutoModelForSequenceClassification, num_labels=1)
    request = PlanRequest(model="llama-2-7b", method="reward", tuning="full")
    assert estimate(request).model.trainable_params == numel(model) == 6_607_347_712
    assert estimate_memory(spec, request).components["optimizer"] == 8 * numel(model)


# --- resolving what the user typed ----------------------------------------------------------


@pytest.mark.parametrize(("shorthand", "profile"), REPRESENTATIVES.items())
def test_every_shorthand_resolves_to_its_representative(shorthand, profile):
    for typed in (shorthand, shorthand.upper()):
        spec = resolve_model(typed)
        assert spec.representative_of == shorthand
        assert spec.source == "shorthand"
        assert spec.name == resolve_model(profile).name
        assert spec.params == resolve_model(profile).params


def test_shorthands_file_lists_every_required_size():
    assert list_shorthands() == REPRESENTATIVES


def test_profiles_carry_display_name_repo_and_unique_aliases():
    names = set()
    for path in PROFILE_FILES:
        meta = json.loads(path.read_text())["_advisor"]
        assert meta["display_name"].lower() == path.stem
        assert "/" in meta["hf_repo"]
        keys = {path.stem, meta["hf_repo"].lower(), *(a.lower() for a in meta["aliases"])}
        assert not keys & names, path
        names |= keys


def test_profile_names_aliases_and_repo_ids_resolve_case_insensitively():
    expected = resolve_model("llama-2-7b")
    for typed in ("Llama-2-7B", "llama2-7b", "meta-llama/Llama-2-7b-hf", " LLAMA-2-7B-HF "):
        spec = resolve_model(typed)
        assert (spec.name, spec.source, spec.params) == ("Llama-2-7B", "profile", expected.params)
        assert spec.representative_of is None


def test_mistral_profile_is_v0_1():
    spec = resolve_model("mistral-7b")
    assert spec.name == "Mistral-7B-v0.1"
    assert spec.hf_config["vocab_size"] == 32000


def test_list_models_returns_every_profile():
    specs = list_models()
    assert sorted(s.name.lower() for s in specs) == sorted(PROFILES)
    assert all(isinstance(s, ModelSpec) and s.source == "profile" for s in specs)


def test_resolving_imports_no_heavy_library_and_no_hub_client():
    code = (
        "import sys, json\nfrom planner.models import resolve_model\nresolve_model('7b')\n"
        "try:\n    resolve_model('nobody/nothing')\nexcept ValueError:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(ROOT / "no-such-cache")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    loaded = {m.split(".")[0] for m in json.loads(out.stdout.splitlines()[-1])}
    assert not loaded & {"torch", "transformers", "huggingface_hub", "peft", "requests", "httpx"}


def test_config_json_path_resolves(tmp_path):
    path = write_config(tmp_path / "my-model" / "config.json", TINY_LLAMA)
    spec = resolve_model(str(path))
    assert (spec.name, spec.source, spec.hidden_size) == ("my-model", "config", 64)
    assert spec.params == numel(build_on_meta(TINY_LLAMA))


def test_model_directory_resolves(tmp_path):
    write_config(tmp_path / "checkpoint-500" / "config.json", TINY_LLAMA)
    spec = resolve_model(str(tmp_path / "checkpoint-500"))
    assert (spec.name, spec.source, spec.num_layers) == ("checkpoint-500", "directory", 2)


def test_repo_id_in_fake_hf_cache_resolves_to_main_snapshot(tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--acme--tiny-chat"
    write_config(repo / "snapshots" / "old" / "config.json", {**TINY_LLAMA, "hidden_size": 32})
    write_config(repo / "snapshots" / "abc123" / "config.json", TINY_LLAMA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = resolve_model("acme/tiny-chat")
    assert (spec.name, spec.source, spec.hidden_size) == ("acme/tiny-chat", "hf-cache", 64)
    assert resolve_model("ACME/Tiny-Chat").name == "acme/tiny-chat"


def test_hf_cache_falls_back_to_hf_home_then_home_cache(tmp_path, monkeypatch):
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_hub_cache() == tmp_path / "hf" / "hub"
    monkeypatch.delenv("HF_HOME")
    assert hf_hub_cache() == Path("~/.cache/huggingface/hub").expanduser()


def test_repo_id_missing_from_cache_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError, match=r"'acme/absent'.*not in the local Hugging Face cache"):
        resolve_model("acme/absent")


# --- errors the user can cause --------------------------------------------------------------


def test_unknown_name_suggests_near_names():
    with pytest.raises(InputError) as caught:
        resolve_model("lama-7b")
    message = str(caught.value)
    assert message.startswith("unknown model 'lama-7b'; did you mean ")
    assert "llama-2-7b" in message
    assert message.endswith("(see `advisor plan --list-models`)")
    assert "\n" not in message


def test_unknown_name_without_near_names_says_what_is_accepted():
    with pytest.raises(InputError, match="pass a size like 7b"):
        resolve_model("zzzzzzzz")


def test_empty_model_is_rejected():
    with pytest.raises(InputError, match="no model given"):
        resolve_model("  ")


def test_missing_path_says_no_such_file(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        resolve_model(str(tmp_path / "nope" / "config.json"))


def test_directory_without_config_json_names_the_directory(tmp_path):
    with pytest.raises(InputError, match=f"model directory {tmp_path} has no config.json"):
        resolve_model(str(tmp_path))


def test_unreadable_config_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match=f"{path}: not UTF-8 text"):
        resolve_model(str(path))


def test_config_without_read_permission_names_the_file(tmp_path, monkeypatch):
    path = write_config(tmp_path / "config.json", TINY_LLAMA)
    real_read_text = Path.read_text

    def denied(self, *args, **kwargs):
        # chmod 0 does not stop root (CI runs as root), so the denial is simulated.
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(InputError, match=rf"{path}: cannot read it \(Permission denied\)"):
        resolve_model(str(path))


def test_malformed_config_names_the_file_and_the_place(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama",\n "hidden_size": }')
    with pytest.raises(InputError, match=rf"{path}: not valid JSON \(.* line 2 column"):
        resolve_model(str(path))


def test_config_that_is_not_an_object_is_rejected(tmp_path):
    path = write_config(tmp_path / "config.json", [1, 2, 3])
    with pytest.raises(InputError, match="does not hold a JSON object"):
        resolve_model(str(path))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_size", 0),
        ("num_hidden_layers", -2),
        ("vocab_size", "big"),
        ("num_key_value_heads", 0),
    ],
)
def test_zero_or_invalid_size_names_the_field_and_file(tmp_path, field, value):
    path = write_config(tmp_path / "config.json", {**TINY_LLAMA, field: value})
    with pytest.raises(InputError, match=rf"{path}: '{field}' must be a positive integer, got"):
        resolve_model(str(path))


@pytest.mark.parametrize(
    ("field", "value", "ceiling"),
    [
        ("hidden_size", 10**30, "262,144"),
        ("num_hidden_layers", 10**12, "4,096"),
        ("vocab_size", 10**20, "16,777,216"),
        ("intermediate_size", 2**21, "1,048,576"),
        ("num_attention_heads", 2**15, "16,384"),
        ("max_position_embeddings", 1e300, "1,073,741,824"),
    ],
)
def test_a_config_size_past_its_ceiling_names_the_field_and_the_ceiling(
    tmp_path, field, value, ceiling
):
    path = write_config(tmp_path / "config.json", {**TINY_LLAMA, field: value})
    with pytest.raises(InputError, match=rf"{path}: '{field}' must be at most {ceiling}, got"):
        resolve_model(str(path))


@pytest.mark.parametrize("value", [["llama"], {"name": "llama"}, 7])
def test_a_model_type_that_is_not_a_string_is_named(tmp_path, value):
    path = write_config(tmp_path / "config.json", {**TINY_LLAMA, "model_type": value})
    with pytest.raises(InputError, match="'model_type' must be a string such as 'llama'"):
        resolve_model(str(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
        ('{"hidden_size": ' + "9" * 5000 + "}", "a number with too many digits"),
        ('{"hidden_size": Infinity}', "must be a positive integer, got inf"),
    ],
)
def test_a_hostile_config_json_is_an_input_error(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text.replace("{", "{" + json.dumps(TINY_LLAMA)[1:-1] + ", ", 1))
    with pytest.raises(InputError, match=message):
        resolve_model(str(path))


@pytest.mark.parametrize("kind", ["fifo", "device", "folder-named-config.json"])
def test_a_config_that_is_no_regular_file_is_refused_without_reading(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "config.json"
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        (tmp_path / "config.json").mkdir()
        path = tmp_path
    with pytest.raises(InputError, match=r"not a regular file|is a folder, not a file"):
        resolve_model(str(path))


def test_missing_size_names_the_field(tmp_path):
    config = {k: v for k, v in TINY_LLAMA.items() if k != "intermediate_size"}
    path = write_config(tmp_path / "config.json", config)
    with pytest.raises(InputError, match=rf"{path}: the config has no 'intermediate_size'"):
        resolve_model(str(path))


def test_heads_not_divisible_by_kv_heads_is_rejected():
    with pytest.raises(
        InputError,
        match=r"num_attention_heads \(4\) is not a multiple of num_key_value_heads \(3\)",
    ):
        spec_from_config({**TINY_LLAMA, "num_key_value_heads": 3}, "x", "config")


def test_encoder_only_model_is_rejected_clearly():
    with pytest.raises(InputError, match="'bert' is an encoder-only model"):
        spec_from_config({"model_type": "bert", "hidden_size": 768}, "bert-base", "config")


def test_model_type_transformers_does_not_know_lists_the_supported_ones():
    with pytest.raises(
        InputError,
        match="model_type 'nosuchlm' is not a model type this transformers knows; the planner covers llama",
    ):
        spec_from_config({**TINY_LLAMA, "model_type": "nosuchlm"}, "nosuchlm", "config")


def test_multimodal_wrapper_uses_its_supported_text_config():
    config = {
        "model_type": "llava",
        "text_config": TINY_LLAMA,
        "vision_config": {"hidden_size": 32},
    }
    spec = spec_from_config(config, "llava-tiny", "config")
    assert spec.name == "llava-tiny (text model)"
    assert spec.params == numel(build_on_meta(TINY_LLAMA))


def test_multimodal_wrapper_with_unsupported_text_model_is_rejected():
    config = {"model_type": "llava", "text_config": {"model_type": "qwen2_vl_text"}}
    with pytest.raises(
        InputError,
        match="'llava' is a multimodal model whose text model 'qwen2_vl_text' has no causal-LM",
    ):
        spec_from_config(config, "llava-qwen2-vl", "config")


def test_shorthand_naming_a_missing_profile_is_reported(tmp_path, monkeypatch):
    write_config(tmp_path / "models" / "tiny.json", TINY_LLAMA)
    (tmp_path / "shorthands.toml").write_text('[shorthands]\n"7b" = "gone"\n')
    monkeypatch.setenv("ADVISOR_PROFILES", str(tmp_path))
    with pytest.raises(InputError, match="shorthand '7b' names 'gone', which is not a profile"):
        resolve_model("tiny")


def test_alias_claimed_by_two_profiles_is_reported(tmp_path, monkeypatch):
    for name in ("one", "two"):
        meta = {"display_name": name, "hf_repo": f"acme/{name}", "aliases": ["same"]}
        write_config(tmp_path / "models" / f"{name}.json", {**TINY_LLAMA, "_advisor": meta})
    monkeypatch.setenv("ADVISOR_PROFILES", str(tmp_path))
    with pytest.raises(InputError, match="the name 'same' is also claimed by profile 'one'"):
        resolve_model("one")


# --- what a MoE plan says it assumes --------------------------------------------------------


def _notes(profile: str, **request) -> str:
    from planner.memory import estimate_memory

    return " | ".join(estimate_memory(resolve_model(profile), PlanRequest(**request)).notes)


def test_moe_plans_state_the_router_loss_the_checkpoint_and_the_attention_they_assume():
    dpo = _notes("gpt-oss-20b", method="dpo", tuning="lora", lora_targets="all-linear")
    assert "router auxiliary loss on" in dpo and "router_aux_loss_coef=0.001" in dpo
    assert "MXFP4" in dpo and "dequantized to bf16" in dpo
    assert "planned with eager attention" in dpo
    assert "will not run" not in dpo  # GPT-OSS's all-linear adapts the attention alone
    orpo = _notes("qwen3-30b-a3b", method="orpo", tuning="full", precision="bf16-true")
    assert "router auxiliary loss off" in orpo and "will not run" not in orpo
    assert "MXFP4" not in orpo and "eager" not in orpo
    assert "all 128 experts of each of the 48 sparse layers" in orpo
    assert "no sdpa" not in _notes("qwen3-30b-a3b", method="dpo", attention="eager")


@pytest.mark.parametrize(
    ("request_fields", "says"),
    [
        ({"method": "sft", "tuning": "full", "precision": "bf16-mixed"}, "grouped_mm, which takes bf16 only"),
    ],
)  # fmt: skip
def test_moe_plans_say_when_transformers_or_peft_would_refuse_the_run(request_fields, says):
    assert "will not run as planned" in _notes("qwen3-30b-a3b", **request_fields)
    assert says in _notes("qwen3-30b-a3b", **request_fields)
    assert "will not run" not in _notes("llama-3.1-8b", **request_fields)


def test_moe_all_linear_lora_is_written_with_the_dropout_peft_accepts(tmp_path):
    """peft 0.21 wraps a MoE's stacked expert weights in a ParamWrapper that refuses any LoRA
    dropout but 0: the run is written with 0 there (and the plan says so), 0.05 elsewhere."""
    from runners.settings import peft_fields

    config = tmp_path / "config.json"
    config.write_text(json.dumps(ARCHITECTURE_CONFIGS["qwen3_moe"]))
    moe = PlanRequest(model=str(config), method="dpo", tuning="lora", lora_targets="all-linear")
    fields = peft_fields(moe)
    assert fields["lora_dropout"] == 0.0
    notes = _notes("qwen3-30b-a3b", method="dpo", tuning="lora", lora_targets="all-linear")
    assert "LoRA dropout 0" in notes and "will not run" not in notes
    assert peft_fields(moe.model_copy(update={"model": "llama-3.1-8b"}))["lora_dropout"] == 0.05
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            CONFIG_MAPPING["qwen3_moe"](**ARCHITECTURE_CONFIGS["qwen3_moe"])
        )
    adapted = get_peft_model(model, LoraConfig(**fields))
    assert any("experts" in name for name, _ in adapted.named_parameters() if "lora_" in name)


def test_sequence_classifier_traits_match_transformers():
    """A reward model and PPO's value model are built with AutoModelForSequenceClassification:
    the trait says which architectures transformers has that class for, and a plan that needs
    one on an architecture without it is refused in one line."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as CLASSIFIERS,
    )

    from planner.plan import estimate

    for model_type, traits in ARCHITECTURES.items():
        assert traits.sequence_classifier is (model_type in CLASSIFIERS), model_type
    for method in ("reward", "ppo"):
        with pytest.raises(InputError, match="no sequence-classification class for granite"):
            estimate(PlanRequest(model="granite-3.1-8b-instruct", method=method))
    assert estimate(PlanRequest(model="granite-3.1-8b-instruct", method="dpo")).fits is not None
