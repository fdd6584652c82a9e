"""Tiny models for tests and offline demos, built on the spot with mlx-lm's own model classes.

No model can be downloaded in CI, so tests build a random-weight llama-architecture
model (a few hundred thousand parameters) with a BPE tokenizer trained here by the
`tokenizers` library and given a chat template. The result is a real model directory
that mlx-lm, and therefore `MLXProvider`, loads like any other.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = """\
The shared cache keeps models on disk so that every process finds them.
A provider loads a model once and keeps it in memory while it is used.
Hello world, hello cache, hello provider. Models are large; downloads are slow.
The quick brown fox jumps over the lazy dog. Tools are called by the agent.
Local models run on the machine they are on: no data leaves it.
"""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(path: Path, vocab_size: int = 300, special_tokens: list[str] | None = None) -> tuple[int, int]:
    """Train a byte-level BPE tokenizer on a small corpus and save it (HF format).

    Returns (vocabulary size, id of the end-of-turn token ``<|im_end|>``).
    """
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
    tokenizer.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": 2048,
            },
            indent=1,
        )
    )
    (path / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    eos_id = tokenizer.token_to_id("<|im_end|>")
    assert eos_id is not None, "the end-of-turn token is one of the special tokens"
    return int(tokenizer.get_vocab_size()), int(eos_id)


def build_tiny_llama(
    path: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 300,
    constant_token: str | None = None,
) -> Path:
    """Write a random-weight llama model directory that mlx-lm loads (config, safetensors, tokenizer).

    ``constant_token``: the model greedily emits only this token, forever. It gets id 0 and
    the final norm is zeroed, so every logit ties and argmax picks 0. With ``"<tool_call>"``
    it is a real model that never stops calling tools, for testing an agent's step limit.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = [constant_token, *SPECIAL_TOKENS] if constant_token else SPECIAL_TOKENS
    vocab, eos_id = train_tokenizer(path, vocab_size, specials)
    config = {
        "model_type": "llama",
        "hidden_size": hidden_size,
        "num_hidden_layers": layers,
        "intermediate_size": hidden_size * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))  # type: ignore[no-untyped-call]
    if constant_token:
        model.model.norm.weight = mx.zeros_like(model.model.norm.weight)
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(config, indent=1))
    return path
