"""Text generation with ``model.generate``: options, streaming through transformers' streamer, stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from provender import cut_at_stops
from provender._provider import DEFAULT_MAX_TOKENS


def generate_kwargs(options: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """``model.generate`` keyword arguments for provender's options.

    Temperature 0 (the default) is greedy (``do_sample=False``): the tokens ``model.generate``
    gives for the same model, prompt and ``max_new_tokens``. Above 0 it samples with that
    temperature and ``top_p`` (no top-k cut, as MLX). ``stop`` strings end generation
    (transformers' ``stop_strings``); the text is cut before them.
    """
    kwargs: dict[str, Any] = {"max_new_tokens": int(options.get("max_tokens") or DEFAULT_MAX_TOKENS)}
    temperature = float(options.get("temperature") or 0.0)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=float(options.get("top_p") or 1.0), top_k=0)
    else:
        kwargs["do_sample"] = False
    stops = stop_list(options.get("stop"))
    if stops:
        kwargs.update(stop_strings=stops, tokenizer=tokenizer)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.eos_token_id
    return kwargs


def stop_list(stop: str | list[str] | tuple[str, ...] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def seed_all(seed: int | None) -> None:
    if seed is not None:
        import torch

        torch.manual_seed(int(seed))  # every device's generator


def generate_text(model: Any, tokenizer: Any, inputs: dict[str, Any], options: dict[str, Any]) -> str:
    """The whole completion, in the calling thread (no streamer: the fastest path)."""
    import torch

    seed_all(options.get("seed"))
    with torch.inference_mode():
        out = model.generate(**inputs, **generate_kwargs(options, tokenizer))
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    stops = stop_list(options.get("stop"))
    return "".join(cut_at_stops([text], stops)) if stops else str(text)


def stream_text(model: Any, tokenizer: Any, inputs: dict[str, Any], options: dict[str, Any]) -> Iterator[str]:
    """The completion piece by piece: ``model.generate`` on a worker thread feeding transformers'
    `TextIteratorStreamer`. Closing the iterator early stops the generation."""
    import torch

    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    abort = threading.Event()

    class Abort(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return abort.is_set()

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = generate_kwargs(options, tokenizer)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            seed_all(options.get("seed"))
            with torch.inference_mode():
                model.generate(**inputs, **kwargs, streamer=streamer, stopping_criteria=StoppingCriteriaList([Abort()]))
        except BaseException as exc:
            errors.append(exc)
            streamer.end()  # wake the reader

    worker = threading.Thread(target=work, name="provender-transformers-generate", daemon=True)
    worker.start()
    try:
        pieces = (piece for piece in streamer if piece)  # the streamer emits "" while a word is incomplete
        yield from cut_at_stops(pieces, stop_list(options.get("stop")))
    finally:
        abort.set()
        worker.join()
    if errors:
        raise errors[0]
