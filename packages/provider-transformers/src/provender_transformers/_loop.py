"""Decoding on the caller's thread: ``model.generate``'s sampling loop, one token per ``next``.

``model.generate`` only hands tokens out through a streamer called from inside it, so streaming
it needs a second thread; on a CPU that thread competes with torch's OpenMP workers (measured:
0.78 to 0.90 of ``model.generate``'s tokens/s with 1.6 to 1.8 times its CPU time). This loop
does what ``model.generate`` does for a decoder-only model, in the thread that asks for tokens:
the model's forward over a `DynamicCache` (the prompt, or the part of it the cache does not hold,
then one token at a time), the last position's logits in float32, transformers' own logits
processors in ``model.generate``'s order (repetition penalty, the request's hook, then
temperature, top-k, top-p and min-p when sampling), and ``argmax`` or ``multinomial`` of the
softmax (greedy with no processor: the ``argmax`` of the logits as the model gives them, which
picks the same token without the copy). Greedy output is therefore ``model.generate``'s token
for token, and a seeded sample is too (the same random draws).

`plan` says whether a model and its generation config are ones this loop reproduces exactly
(a model with its own ``prepare_inputs_for_generation``, or a generation config asking for
anything else, such as ``no_repeat_ngram_size``, a static cache or ``suppress_tokens``, is not):
`provender_transformers._generate` runs ``model.generate`` on a worker thread otherwise.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

# Generation-config fields the loop reproduces; any other field set away from its default sends
# the request to ``model.generate`` itself.
HANDLED = frozenset(
    {
        "max_new_tokens",
        "max_length",
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "use_cache",
        "transformers_version",
        "_from_model_config",
    }
)


@dataclass
class Plan:
    """How to sample: transformers' logits processors (the request's hook among them) and whether
    to draw (``multinomial``) or take the best (``argmax``)."""

    processors: Any  # a LogitsProcessorList
    sample: bool


def forward_names(model: Any) -> tuple[str, str | None] | None:
    """The names `model`'s forward gives the cache and the logits cut (``logits_to_keep``; older
    transformers ``num_logits_to_keep``), or None when it takes no cache argument."""
    return _names(type(model).forward)


@functools.cache
def _names(forward: Any) -> tuple[str, str | None] | None:
    params = inspect.signature(forward).parameters
    cache = next((name for name in ("cache", "past_key_values") if name in params), None)
    if cache is None:
        return None
    keep = next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in params), None)
    return cache, keep


def plan(model: Any, kwargs: dict[str, Any], hook: Any = None) -> Plan | None:
    """The sampling plan for `model` with ``model.generate`` keyword arguments `kwargs` (and the
    request's logits processor `hook`), or None when this loop would not give exactly what
    ``model.generate`` gives."""
    from transformers import (
        GenerationMixin,
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    if getattr(model.config, "is_encoder_decoder", False) or forward_names(model) is None:
        return None
    prepare = getattr(type(model), "prepare_inputs_for_generation", None)
    if prepare is not GenerationMixin.prepare_inputs_for_generation:
        return None  # the model prepares its inputs its own way (multimodal, recurrent, ...)
    config = copy.deepcopy(model.generation_config)
    config.update(**kwargs)
    if not set(config.to_diff_dict()) <= HANDLED:
        return None
    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(float(config.repetition_penalty)))
    if hook is not None:
        processors.append(hook)
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k is not None and config.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
        if config.min_p is not None:
            processors.append(MinPLogitsWarper(min_p=config.min_p, min_tokens_to_keep=1))
    return Plan(processors, bool(config.do_sample))


def tokens(model: Any, prompt: Any, state: Any, how: Plan, max_tokens: int) -> Generator[int, None, None]:
    """Up to `max_tokens` new token ids after `prompt` (a (1, n) tensor on the model's device), one
    forward pass per ``next``, on the caller's thread. `state` is a `DynamicCache` holding the first
    ``state.get_seq_length()`` of the prompt's ids (0: empty); each token fed to the model is added
    to it, so when the caller stops it holds the prompt and every token but the last.

    Each step runs under ``torch.inference_mode`` on its own: nothing of it is in force between
    tokens, in the caller's code."""
    import torch

    names = forward_names(model)
    assert names is not None, "plan() accepts only models whose forward takes a cache"
    cache_name, keep_name = names
    n = int(prompt.shape[1])
    with torch.inference_mode():
        history = torch.empty((1, n + max_tokens), dtype=prompt.dtype, device=prompt.device)
        history[:, :n] = prompt
        mask = torch.ones_like(history)
        step = prompt[:, int(state.get_seq_length()) :]
    extra: dict[str, Any] = {cache_name: state, "use_cache": True}
    if keep_name is not None:
        extra[keep_name] = 1  # only the last position's logits (model.generate does the same)
    for length in range(n, n + max_tokens):
        with torch.inference_mode():
            out = model(input_ids=step, attention_mask=mask[:, :length], **extra)
            if how.sample or how.processors:
                scores = out.logits[:, -1].to(copy=True, dtype=torch.float32)
                if how.processors:
                    scores = how.processors(history[:, :length], scores)
                if how.sample:
                    chosen = torch.multinomial(torch.nn.functional.softmax(scores, dim=-1), num_samples=1).squeeze(1)
                else:
                    chosen = torch.argmax(scores, dim=-1)
            else:  # greedy, nothing to process: float32 holds every half-precision logit exactly, same argmax
                chosen = torch.argmax(out.logits[:, -1], dim=-1)
            del out
            history[:, length] = chosen
            step = history[:, length : length + 1]
        yield int(chosen.item())
