"""The caller's-thread decoding loop (`provender_transformers._loop`) against ``model.generate`` itself.

On the tiny random llama of `provender_transformers.testing`: greedy and seeded samples are
``model.generate``'s, with the sampling options and with a repetition penalty the model's own
generation config sets; no thread is started and no torch mode leaks into the caller between
tokens; a generation config the loop does not reproduce (``no_repeat_ngram_size``) is served by
``model.generate`` on a worker thread, with its output, and the prompt cache still works there.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from provender_transformers import TransformersProvider
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "Hello world, the shared cache"
WORKER = "provender-transformers-generate"


def with_generation_config(tiny_llama: Path, tmp_path: Path, **fields: Any) -> Path:
    """A copy of the tiny llama whose generation_config.json also sets `fields`."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, **fields}))
    return folder


def model_generate(
    folder: Path, max_new_tokens: int, seed: int | None = None, dtype: Any = torch.float32, **kwargs: Any
) -> str:
    """What ``model.generate`` gives on a fresh load of `folder` in `dtype` (new tokens only, as text)."""
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    enc = tokenizer(PROMPT, return_tensors="pt")
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, **kwargs)
    return str(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))


def watched(chunks: Iterator[str]) -> tuple[str, set[str], list[tuple[bool, bool]]]:
    """The text of `chunks`, the names of the threads alive while they came, and torch's
    (inference mode, grad mode) as the caller saw them between chunks."""
    names: set[str] = set()
    modes = []
    text = ""
    for chunk in chunks:
        text += chunk
        names |= {t.name for t in threading.enumerate()}
        modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
    return text, names, modes


def test_streaming_runs_on_the_callers_thread(tiny_llama: Path) -> None:
    expected = model_generate(tiny_llama, 24, do_sample=False)
    provider = TransformersProvider(str(tiny_llama))
    assert provider.generate(PROMPT, max_tokens=24) == expected
    before = {t.name for t in threading.enumerate()}
    text, names, modes = watched(provider.stream(PROMPT, max_tokens=24))
    assert text == expected and len(modes) > 1
    assert names == before  # no worker thread: the tokens are computed in next()
    assert set(modes) == {(False, True)}  # no inference or no-grad mode left on between tokens
    # the iterator may be advanced from a different thread at each step (as an async server does)
    stream = provider.stream(PROMPT, max_tokens=24)
    with ThreadPoolExecutor(4) as pool:
        pieces = []
        while (piece := pool.submit(next, stream, None).result()) is not None:
            pieces.append(piece)
    assert "".join(pieces) == expected


def test_greedy_in_half_precision_is_model_generates(tiny_llama: Path) -> None:
    # greedy with no logits processor takes the argmax of the bfloat16 logits as they come (no float32
    # copy, as model.generate makes): the same tokens, and not those of the float32 weights
    expected = model_generate(tiny_llama, 48, dtype=torch.bfloat16, do_sample=False)
    assert expected != model_generate(tiny_llama, 48, do_sample=False)  # the precision changes the reply
    provider = TransformersProvider(str(tiny_llama), dtype="bfloat16")
    model, _ = provider.load_model()
    assert model.dtype == torch.bfloat16
    assert provider.generate(PROMPT, max_tokens=48) == expected
    assert "".join(provider.stream(PROMPT, max_tokens=48)) == expected


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 1.0},
        {"temperature": 1.3, "top_p": 0.9},
        {"temperature": 1.5, "top_k": 3},
        {"temperature": 1.0, "min_p": 0.3},
    ],
)
def test_a_seeded_sample_is_model_generates_sample(tiny_llama: Path, options: dict[str, Any]) -> None:
    provider = TransformersProvider(str(tiny_llama))
    greedy = provider.generate(PROMPT, max_tokens=16)
    plain = {"do_sample": True, "temperature": options["temperature"], "top_p": 1.0, "top_k": 0}  # no cut
    cut = {k: v for k, v in options.items() if k != "temperature"}
    samples, uncut = set(), set()
    for seed in (3, 4):
        ours = provider.generate(PROMPT, max_tokens=16, seed=seed, **options)
        assert ours == model_generate(tiny_llama, 16, seed=seed, **{**plain, **cut})
        assert "".join(provider.stream(PROMPT, max_tokens=16, seed=seed, **options)) == ours
        samples.add(ours)
        uncut.add(model_generate(tiny_llama, 16, seed=seed, **plain))
    assert len(samples) == 2 and greedy not in samples  # really sampled, and the seed decides
    if cut:
        assert samples != uncut  # the cut changes the draws: a warper left out would show


def test_the_models_repetition_penalty_is_applied_as_model_generate_does(tiny_llama: Path, tmp_path: Path) -> None:
    folder = with_generation_config(tiny_llama, tmp_path, repetition_penalty=1.5)
    expected = model_generate(folder, 24, do_sample=False)
    assert expected != model_generate(tiny_llama, 24, do_sample=False)  # the penalty changes the output
    provider = TransformersProvider(str(folder))
    provider.load_model()
    before = {t.name for t in threading.enumerate()}
    text, names, _ = watched(provider.stream(PROMPT, max_tokens=24))
    assert text == expected and names == before  # on the caller's thread
    assert provider.generate(PROMPT, max_tokens=24) == expected


def test_a_generation_config_the_loop_does_not_reproduce_runs_model_generate(tiny_llama: Path, tmp_path: Path) -> None:
    folder = with_generation_config(tiny_llama, tmp_path, no_repeat_ngram_size=1)
    expected = model_generate(folder, 24, do_sample=False)
    assert expected != model_generate(tiny_llama, 24, do_sample=False)  # the option changes the output
    provider = TransformersProvider(str(folder))
    text, names, modes = watched(provider.stream(PROMPT, max_tokens=24))
    assert text == expected and WORKER in names  # model.generate on its worker thread
    assert set(modes) == {(False, True)}
    assert WORKER not in {t.name for t in threading.enumerate()}  # joined at the end
    stats = provider.prompt_cache().stats
    reused = stats.cached_tokens
    assert provider.generate(PROMPT, max_tokens=24) == expected
    assert stats.cached_tokens > reused  # the state model.generate filled was stored and reused
    stream = provider.stream(PROMPT, max_tokens=2000)
    assert next(stream)
    stream.close()  # stops the worker
    assert WORKER not in {t.name for t in threading.enumerate()}
    assert provider.generate(PROMPT, max_tokens=24) == expected
