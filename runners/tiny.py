"""A tiny random-weight Llama model, a locally trained tokenizer and demo datasets per method.

Everything here is built on this machine from a built-in corpus: no downloads, ever. The model
is saved to a folder because TRL rebuilds reference models from `config._name_or_path`, so
an in-memory model would fail there.
"""

from __future__ import annotations

import json
from pathlib import Path

from planner.recipes import PROMPT_COLUMNS, recipe
from planner.specs import Method

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
"""Role-tagged turns each closed by EOS; the assistant tag opens a generation."""

SPECIAL_TOKENS = [
    "<|pad|>",
    "<|bos|>",
    "<|eos|>",
    "<|unk|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
]

VOCAB_SIZE = 512
SEED = 1234

# (question, a helpful answer, an unhelpful answer): the demo preference data.
QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Paris.", "I do not know."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders have wings."),
    ("What colour is the sky on a clear day?", "It is blue on a clear day.", "The sky is green."),
    ("What is two plus two?", "Two plus two is four.", "It is seven."),
    ("Name a primary colour.", "Red is a primary colour.", "Colours are not real."),
    ("What do bees make?", "Bees make honey and wax.", "Bees make metal."),
    ("Which planet is closest to the sun?", "Mercury is closest to the sun.", "The moon is."),
    ("What is water made of?", "Water is hydrogen and oxygen.", "Water is made of sand."),
    ("How many days are in a week?", "A week has seven days.", "A week has two days."),
    ("What does a thermometer measure?", "It measures temperature.", "It measures weight."),
    ("What is the opposite of hot?", "The opposite of hot is cold.", "The opposite is blue."),
    ("Where do fish live?", "Fish live in water.", "Fish live in trees."),
    ("What is the largest ocean?", "The Pacific is the largest ocean.", "A puddle is."),
    ("What do plants need to grow?", "Plants need light, water and air.", "Plants need shoes."),
    ("How many hours are in a day?", "A day has twenty four hours.", "A day has three hours."),
    ("What is ice?", "Ice is frozen water.", "Ice is a kind of fire."),
]


def corpus() -> list[str]:
    """The text the tokenizer learns from: the demo questions and answers, and role tags."""
    lines = []
    for question, good, bad in QUESTIONS:
        lines += [question, good, bad, f"<|user|>{question}<|assistant|>{good}"]
    return lines * 4


def build_tokenizer(folder: Path):
    """Train a byte-level BPE tokenizer on `corpus()` and save it (with a chat template) to folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    fast.save_pretrained(folder)
    return fast


def build_model(folder: Path, *, hidden: int = 64, layers: int = 2) -> Path:
    """A random-weight Llama (hidden 64, 2 layers) and its tokenizer, saved to folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    return folder


def ensure_model(folder: Path) -> Path:
    """The tiny model in folder, building it first if it is not there yet."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "tokenizer.json").is_file():
        build_model(folder)
    return folder


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def demo_rows(method: Method | str, *, conversational: bool = False) -> list[dict]:
    """Demo rows in the format TRL expects for method (plain text unless conversational), shaped
    by the columns its recipe names: pairs, labelled completions, prompts only, or (SFT) prompt
    + completion, one of the forms `sft_columns` accepts."""
    columns = recipe(method).columns
    rows: list[dict] = []
    for question, good, bad in QUESTIONS:
        prompt = _user(question) if conversational else question
        chosen = _assistant(good) if conversational else " " + good
        rejected = _assistant(bad) if conversational else " " + bad
        if "chosen" in columns:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        elif "label" in columns:
            rows.append({"prompt": prompt, "completion": chosen, "label": True})
            rows.append({"prompt": prompt, "completion": rejected, "label": False})
        elif columns == PROMPT_COLUMNS:
            rows.append({"prompt": prompt})
        else:
            rows.append({"prompt": prompt, "completion": chosen})
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    """Rows as one JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_demo_dataset(method: Method | str, folder: Path) -> Path:
    """The demo dataset for method, as folder/<method>.jsonl."""
    method = Method(method)
    return write_jsonl(demo_rows(method), Path(folder) / f"{method.value}.jsonl")
