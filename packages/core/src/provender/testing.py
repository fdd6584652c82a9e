"""Testing a provider: the contract suite, and a toolkit for building tiny real models on the spot.

`ProviderContract` (needs pytest) is a reusable suite a plugin's tests subclass (and
`StructuredContract`, constrained decoding and logprobs on a tiny random model)::

    from provender.testing import ProviderContract

    class TestMyProvider(ProviderContract):
        provider_name = "mine"           # as registered by your plugin
        model = "some-model"             # a model your tests can load
        capabilities = {"generate", "stream", "chat"}

No model can be downloaded in CI, so providers' tests build tiny random-weight models with
their runtime's own classes. What those models share lives here: a byte-level BPE tokenizer
trained on a small corpus by the `tokenizers` library (`train_bpe`), saved in the Hugging
Face format with a ChatML chat template that renders tools (`save_tokenizer`), and its
vocabulary as GGUF wants it (`bpe_vocabulary`). Importing this module imports neither
pytest nor tokenizers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provender._contract import ALL_CAPABILITIES, SCHEMA, WEATHER_TOOL, ProviderContract, StructuredContract

__all__ = [
    "ALL_CAPABILITIES",
    "CHATML",
    "CHAT_TEMPLATE",
    "CORPUS",
    "SPECIAL_TOKENS",
    "SCHEMA",
    "WEATHER_TOOL",
    "ProviderContract",
    "StructuredContract",
    "bpe_vocabulary",
    "save_tokenizer",
    "train_bpe",
    "train_tokenizer",
]

CORPUS = """\
The shared cache keeps models on disk so that every process finds them.
A provider loads a model once and keeps it in memory while it is used.
Hello world, hello cache, hello provider. Models are large; downloads are slow.
The quick brown fox jumps over the lazy dog. Tools are called by the agent.
Local models run on the machine they are on: no data leaves it.
"""

#: ChatML: ``<|im_start|>role\ncontent<|im_end|>`` per message, then the assistant's turn
CHATML = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: ChatML with a system turn naming the tools (``Tools: get_weather``) when tools are given
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools:{% for tool in tools %} {{ tool['function']['name'] }}"
    "{% endfor %}<|im_end|>\n{% endif %}" + CHATML
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_bpe(vocab_size: int = 300, special_tokens: list[str] | None = None, corpus: str | None = None) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` trained on `CORPUS` (deterministic).

    `CORPUS` holds about 400 distinct tokens' worth of text, so a larger `vocab_size` needs a
    larger `corpus` of your own (the benchmarks train a 32,000-token one on Python's own sources)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens or SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((corpus or CORPUS).splitlines() * 4, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Any, path: Path, chat_template: str = CHAT_TEMPLATE) -> tuple[int, int]:
    """Save `tokenizer` in `path` as Hugging Face does (``tokenizer.json``, its config with the
    chat template, the special tokens map). Returns (vocabulary size, id of ``<|im_end|>``)."""
    tokenizer.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": chat_template,
        "model_max_length": 2048,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (path / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    eos_id = tokenizer.token_to_id("<|im_end|>")
    assert eos_id is not None, "the end-of-turn token is one of the special tokens"
    return int(tokenizer.get_vocab_size()), int(eos_id)


def train_tokenizer(
    path: Path, vocab_size: int = 300, special_tokens: list[str] | None = None, chat_template: str = CHAT_TEMPLATE
) -> tuple[int, int]:
    """`train_bpe`, then `save_tokenizer` in `path`: (vocabulary size, id of ``<|im_end|>``)."""
    return save_tokenizer(train_bpe(vocab_size, special_tokens), path, chat_template)


def bpe_vocabulary(tokenizer: Any) -> tuple[list[str], list[str]]:
    """(tokens in id order, merges as ``"a b"``) of a BPE tokenizer: what a GGUF stores."""
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    return tokens, [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]


_CONTRACT = ("ProviderContract", "StructuredContract", "ALL_CAPABILITIES", "SCHEMA", "WEATHER_TOOL")


def __getattr__(name: str) -> Any:
    if name in (
        "ProviderContract",
        "StructuredContract",
        "ALL_CAPABILITIES",
        "SCHEMA",
        "WEATHER_TOOL",
    ):  # the suite imports pytest: only when asked for
        from provender import _contract

        return getattr(_contract, name)
    raise AttributeError(f"module 'provender.testing' has no attribute {name!r}")
