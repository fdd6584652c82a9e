"""Text generation: options, the request's logits hook, tokens decoded on the caller's thread
(`provender_transformers._loop`) or, for a model that loop does not reproduce, from
``model.generate`` on a worker thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
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
    """The completion chunk by chunk. The request's `Decoding` hooks the logits (a
    `LogitsProcessor`, ahead of transformers' temperature and top-p warpers). Tokens come from
    `provender_transformers._loop.tokens` on the caller's thread, or from ``model.generate`` on a
    worker thread (`_threaded`) for a model or generation config that loop does not reproduce.
    Closing the iterator early stops the generation.

    The decoding runs over a `DynamicCache`: with the model's prompt cache on, the longest stored
    prefix of the prompt's ids is reused (only the rest runs through the model) and the state the
    generation leaves is stored again under the ids it holds."""
    import torch

    from provender_transformers import _loop
    from provender_transformers._prompt import new_state
    from transformers import LogitsProcessor

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
    ids: list[int] = inputs["input_ids"][0].tolist()
    fed = list(ids)  # what the state holds once the generation has run: the prompt, then the reply
    prompts = item.prompt_cache
    state: Any = None
    if prompts is not None and prompts.enabled:
        state, decoding.cached_tokens = prompts.fetch(ids)

    class Hook(LogitsProcessor):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return decoding.torch_hook(input_ids, scores)

    hook = Hook() if decoding.hooked else None
    kwargs = generate_kwargs(request.options, tokenizer, decoding.max_tokens)
    how = _loop.plan(model, kwargs, hook)
    if state is None and (how is not None or (prompts is not None and prompts.enabled)):
        state = new_state(model)
    if request.options.seed is not None:
        torch.manual_seed(request.options.seed)  # every device's generator
    if how is not None:
        generated = _recorded(_loop.tokens(model, inputs["input_ids"], state, how, decoding.max_tokens), fed)
    else:
        generated = _threaded(model, inputs, kwargs, hook, state, fed)
    failed = False
    try:
        yield from decoding.run(generated, detokenizer, eos_ids.__contains__)
    except GeneratorExit:
        raise  # closed early: the state is whole, between two tokens
    except BaseException:
        failed = True  # a forward pass may have stopped half-way: the state is not kept
        raise
    finally:
        generated.close()
        if state is not None and prompts is not None and prompts.enabled and not failed:
            from provender_transformers._prompt import keep, offer

            offer(prompts, ids, state)  # cache.prompt_cache_auto_tokens: the prompt's state to the disk cache
            keep(prompts, fed, state)


def _recorded(tokens: Generator[int, None, None], fed: list[int]) -> Generator[int, None, None]:
    """`tokens`, each appended to `fed` as it goes (the model is fed it if another token is asked for)."""
    try:
        for token in tokens:
            fed.append(token)
            yield token
    finally:
        tokens.close()


def _threaded(
    model: Any, inputs: dict[str, Any], kwargs: dict[str, Any], hook: Any, state: Any, fed: list[int]
) -> Generator[int, None, None]:
    """The new token ids of ``model.generate`` running on a worker thread (a streamer hands each
    over through a queue, and appends it to `fed` there: complete once the thread is joined);
    closing this iterator stops the generation and joins the thread. `state`, when given, is the
    `DynamicCache` it runs over (the ids it holds are skipped)."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    from provender_transformers._loop import forward_names
    from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    tokens: queue.Queue[int | None] = queue.Queue()
    abort = threading.Event()
    errors: list[BaseException] = []

    class Streamer(BaseStreamer):  # type: ignore[misc]
        prompt = True

        def put(self, value: Any) -> None:
            if not self.prompt:
                token = int(value.reshape(-1)[0])
                fed.append(token)
                tokens.put(token)
            self.prompt = False

        def end(self) -> None:
            tokens.put(None)

    class Abort(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return abort.is_set()

    kwargs = dict(kwargs)
    if hook is not None:
        kwargs["logits_processor"] = LogitsProcessorList([hook])
    if state is not None:
        names = forward_names(model)  # transformers 5 calls it cache, 4 past_key_values
        kwargs[names[0] if names else "past_key_values"] = state  # the ids it holds are skipped

    def work() -> None:
        try:
            with torch.inference_mode():
                model.generate(
                    **inputs, **kwargs, streamer=Streamer(), stopping_criteria=StoppingCriteriaList([Abort()])
                )
        except BaseException as exc:
            errors.append(exc)
            tokens.put(None)  # wake the reader

    worker = threading.Thread(target=work, name="provender-transformers-generate", daemon=True)
    worker.start()
    try:
        while (token := tokens.get()) is not None:
            yield token
        if errors:
            raise errors[0]
    finally:
        abort.set()
        worker.join()
