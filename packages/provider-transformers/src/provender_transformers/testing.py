"""Tiny models for tests and offline demos, built on the spot with transformers' own classes.

No model can be downloaded in CI, so tests build a random-weight llama (a few hundred
thousand parameters) with ``LlamaForCausalLM`` and a byte-level BPE tokenizer trained here
by the `tokenizers` library, given a chat template that renders tools. The result is a
real model directory (``save_pretrained``) that transformers, and `TransformersProvider`,
load like any Hub repo.
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
    "{% if tools %}<|im_start|>system\nTools: {{ tools | map(attribute='function.name') | join(', ') }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(path: Path, vocab_size: int = 300) -> tuple[int, int]:
    """Train a byte-level BPE tokenizer on a small corpus and save it in the Hugging Face format.

    Returns (vocabulary size, id of the end-of-turn token ``<|im_end|>``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    tokenizer.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 2048,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (path / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    eos_id = tokenizer.token_to_id("<|im_end|>")
    assert eos_id is not None, "the end-of-turn token is one of the special tokens"
    return int(tokenizer.get_vocab_size()), int(eos_id)


def build_tiny_llama(path: str | Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """Write a random-weight llama directory (config, safetensors, tokenizer) with transformers' classes."""
    import torch

    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab, eos_id = train_tokenizer(path)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=0,
        bos_token_id=None,
        initializer_range=0.5,  # wide random weights: varied text, not one token repeated
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=0)
    model.save_pretrained(str(path))
    return path
