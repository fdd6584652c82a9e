"""Text generation with ``model.generate``: options, tokens streamed from a worker thread, logits hooked."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from provender.generation import Detokenizer, hf_token_bytes

if TYPE_CHECKING:
    from provender import LoadedModel
    from provender._pooled import PooledProvider, Request
    from provender.generation import Chunk, GenerationOptions


def generate_kwargs(options: GenerationOptions, tokenizer: Any, max_tokens: int) -> dict[str, Any]:
    """``model.generate`` keyword arguments for provender's options.

    Temperature 0 (the default) is greedy (``do_sample=False``): the tokens ``model.generate``
    gives for the same model, prompt and ``max_new_tokens``. Above 0 it samples with that
    temperature and ``top_p`` (no top-k cut, as MLX, unless ``top_k`` is given) and ``min_p``.
    """
    kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": bool(options.temperature)}
    if options.temperature:
        kwargs.update(temperature=options.temperature, top_p=options.top_p or 1.0, top_k=options.top_k or 0)
        if options.min_p:
            kwargs["min_p"] = options.min_p
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.eos_token_id
    return kwargs


def decode_tokens(provider: PooledProvider, item: LoadedModel, request: Request) -> Iterator[Chunk]:
    """The completion chunk by chunk: ``model.generate`` on a worker thread hands each token over
    (a streamer); the request's `Decoding` hooks the logits (a `LogitsProcessor`, ahead of
    transformers' temperature and top-p warpers). Closing the iterator early stops the generation.

    With the model's prompt cache on, the longest stored prefix of the prompt's ids is reused
    (``past_key_values``: ``model.generate`` runs only the rest through the model) and the state
    the generation leaves is stored again under the ids it holds."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    model, tokenizer = item.model, item.tokenizer
    inputs = dict(tokenizer(request.text, return_tensors="pt", add_special_tokens=not request.chat).to(model.device))
    decoding = provider.decoding(
        request,
        prompt_tokens=int(inputs["input_ids"].shape[1]),
        token_text=lambda t: str(tokenizer.decode([t], skip_special_tokens=False)),
        token_bytes=hf_token_bytes(tokenizer),
    )
    detokenizer = Detokenizer(lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)))
    eos = model.generation_config.eos_token_id
    eos_ids = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}
    tokens: queue.Queue[int | None] = queue.Queue()
    ids = [int(t) for t in inputs["input_ids"][0]]
    fed = list(ids)  # what the state holds once the generation has run: the prompt, then the reply
    prompts = item.prompt_cache
    state: Any = None
    if prompts is not None and prompts.enabled:
        from provender_transformers._prompt import new_state

        state, _reused = prompts.fetch(ids)
        if state is None:
            state = new_state(model)
    abort = threading.Event()
    errors: list[BaseException] = []

    class Streamer(BaseStreamer):  # type: ignore[misc]
        prompt = True

        def put(self, value: Any) -> None:
            if not self.prompt:
                token = int(value.reshape(-1)[0])
                fed.append(token)  # on the worker: complete once it is joined
                tokens.put(token)
            self.prompt = False

        def end(self) -> None:
            tokens.put(None)

    class Abort(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return abort.is_set()

    class Hook(LogitsProcessor):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return decoding.torch_hook(input_ids, scores)

    kwargs = generate_kwargs(request.options, tokenizer, decoding.max_tokens)
    if decoding.hooked:
        kwargs["logits_processor"] = LogitsProcessorList([Hook()])
    if state is not None:
        kwargs["past_key_values"] = state  # the ids it holds are skipped; the rest is prefilled

    def work() -> None:
        try:
            if request.options.seed is not None:
                torch.manual_seed(request.options.seed)  # every device's generator
            with torch.inference_mode():
                model.generate(
                    **inputs, **kwargs, streamer=Streamer(), stopping_criteria=StoppingCriteriaList([Abort()])
                )
        except BaseException as exc:
            errors.append(exc)
            tokens.put(None)  # wake the reader

    worker = threading.Thread(target=work, name="provender-transformers-generate", daemon=True)
    worker.start()

    def generated() -> Iterator[int]:
        while (token := tokens.get()) is not None:
            yield token
        if errors:
            raise errors[0]

    try:
        yield from decoding.run(generated(), detokenizer, eos_ids.__contains__)
    finally:
        abort.set()
        worker.join()
        if state is not None and prompts is not None and not errors:
            from provender_transformers._prompt import keep, offer

            offer(prompts, ids, state)  # cache.prompt_cache_auto_tokens: the prompt's state to the disk cache
            keep(prompts, fed, state)
