"""Continuous batching: concurrent generations on one MLX model decoded together, each
answer the same as the request served alone; a disconnect drops only its own sequence."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai", reason="the server tests drive it with the openai package (tox installs it)")

PROMPTS = [
    ("Hello world, hello cache", 9),
    ("The quick brown fox", 23),
    ("Models are large; downloads are slow.", 40),
    ("A provider loads a model once", 14),
]


def _wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _row(server: Any, model: str) -> dict[str, Any]:
    return next(r for r in server.ps() if r["model"] == model)


def _blocker(server: Any, model: str) -> Any:
    """A long generation running alone on `model` (not joinable past its first token): requests
    sent meanwhile wait in the queue, and start together as one batch when it is closed."""
    stream = server.client().completions.create(model=model, prompt="go", max_tokens=20000, stream=True)
    for n, _ in enumerate(stream):
        if n == 3:
            break
    return stream


def _complete(server: Any, model: str, prompt: str, max_tokens: int, stream: bool) -> str:
    client = server.client()
    if stream:
        chunks = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, stream=True)
        return "".join(ch.choices[0].text for ch in chunks if ch.choices)
    return str(client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens).choices[0].text)


def _chat(server: Any, model: str, prompt: str, max_tokens: int) -> tuple[str, Any]:
    reply = server.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens
    )
    return str(reply.choices[0].message.content), reply.usage


def test_batched_greedy_equals_alone(start_server: Any, cached_tiny: str) -> None:
    server = start_server()
    alone = {p: _complete(server, cached_tiny, p, m, False) for p, m in PROMPTS}
    chat_alone = _chat(server, cached_tiny, "hello provider", 17)
    assert _row(server, cached_tiny)["largest_batch"] == 1  # one at a time so far
    assert len(set(alone.values())) == len(PROMPTS)  # different prompts, different answers

    blocker = _blocker(server, cached_tiny)
    with ThreadPoolExecutor(5) as pool:
        futures = {p: pool.submit(_complete, server, cached_tiny, p, m, i % 2 == 0) for i, (p, m) in enumerate(PROMPTS)}
        chat = pool.submit(_chat, server, cached_tiny, "hello provider", 17)
        _wait_for(lambda: _row(server, cached_tiny)["queued"] >= 5, "the five requests did not queue")
        blocker.close()
        for prompt, future in futures.items():
            assert future.result(timeout=120) == alone[prompt], prompt
        text, usage = chat.result(timeout=120)
    assert (text, usage.prompt_tokens, usage.completion_tokens) == (chat_alone[0], chat_alone[1].prompt_tokens, 17)
    assert _row(server, cached_tiny)["largest_batch"] == 5  # all five decoded together


def test_disconnect_mid_batch_leaves_the_others_complete(start_server: Any, cached_tiny: str) -> None:
    server = start_server()
    long = {p: m * 8 for p, m in PROMPTS[:3]}
    alone = {p: _complete(server, cached_tiny, p, m, True) for p, m in long.items()}
    blocker = _blocker(server, cached_tiny)
    leaver_read: list[str] = []

    def leaver() -> None:
        stream = server.client().completions.create(model=cached_tiny, prompt="go", max_tokens=20000, stream=True)
        for chunk in stream:
            leaver_read.append(chunk.choices[0].text if chunk.choices else "")
            if len(leaver_read) == 5:
                stream.close()  # the client goes away mid-batch
                return

    with ThreadPoolExecutor(4) as pool:
        futures = {p: pool.submit(_complete, server, cached_tiny, p, m, True) for p, m in long.items()}
        left = pool.submit(leaver)
        _wait_for(lambda: _row(server, cached_tiny)["queued"] >= 4, "the four requests did not queue")
        blocker.close()
        left.result(timeout=120)
        for prompt, future in futures.items():
            assert future.result(timeout=120) == alone[prompt], prompt
    assert len(leaver_read) == 5
    # the leaver's 20000 tokens are not generated: the model goes idle soon after the others end
    _wait_for(lambda: not _row(server, cached_tiny)["busy"], "the dropped sequence kept the model busy", 30)
    row = _row(server, cached_tiny)
    assert (row["largest_batch"], row["dropped"]) == (4, 2)  # the blocker, then the leaver


def test_provider_without_batching_serves_one_at_a_time(start_server: Any, make_script: Any) -> None:
    server = start_server()
    scripted = make_script(["the scripted answer"])
    barrier = threading.Barrier(4)

    def ask(i: int) -> str:
        barrier.wait()
        text, _ = _chat(server, scripted, f"question {i}", 8)
        return text

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert answers == ["the scripted answer"] * 4
    row = _row(server, scripted)
    assert row["requests"] == 4 and row["largest_batch"] is None  # no batch: its provider cannot


def test_seeded_request_runs_alone_with_its_seed(start_server: Any, cached_tiny: str) -> None:
    server = start_server()
    client = server.client()

    def sample() -> str:
        reply = client.completions.create(model=cached_tiny, prompt="hi", max_tokens=12, temperature=1.5, seed=7)
        return str(reply.choices[0].text)

    assert sample() == sample()  # the seed reaches the provider: a batch would share one random state
    assert _row(server, cached_tiny)["largest_batch"] is not None


def test_session_in_process_honours_stops_and_eos(tiny_model: Path) -> None:
    from provender import Provider, UnsupportedError
    from provender_mlx.provider import MLXProvider

    provider = MLXProvider(str(tiny_model))
    alone = "".join(provider.stream("Hello world", max_tokens=30))
    stop = alone[5:8]
    cut_alone = "".join(provider.stream("Hello world", max_tokens=30, stop=[stop]))
    assert len(cut_alone) < len(alone)
    with provider.batch_session() as session:
        plain = session.insert("Hello world", max_tokens=30)
        cut = session.insert("Hello world", max_tokens=30, stop=[stop])
        sampled = session.insert("The cache", max_tokens=6, temperature=0.8, top_p=0.9)
        with pytest.raises(UnsupportedError):
            session.insert("x", seed=1)
        texts: dict[int, list[str]] = {plain: [], cut: [], sampled: []}
        while len(session):
            for uid, text, _finished in session.step():
                texts[uid].append(text)
    assert "".join(texts[plain]) == alone and len(texts[plain]) == 30
    assert "".join(texts[cut]) == cut_alone
    assert len(texts[sampled]) == 6
    with pytest.raises(UnsupportedError):
        Provider("m").batch_session()


def test_the_server_touches_the_pool_entry_a_pooled_provider_loaded_with_arguments(tmp_path: Path) -> None:
    """A provider built with load arguments (a device, a context size) keeps its model under a key
    that carries them; the server's keep-alive must refresh that entry, not `name:model`."""
    from provender import CacheManager, model_pool
    from provender_echo.provider import EchoProvider
    from provender_serve._models import _touch_pool, pool_key

    provider = EchoProvider("upper", cache=CacheManager(tmp_path / "cache"), device="cpu")
    assert provider.key == "echo:upper?device=cpu" and pool_key(provider) == provider.key
    provider.generate("hello")
    try:
        _touch_pool(provider, 1234.0)
        item = model_pool().peek(provider.key)
        assert item is not None and item.keep_alive == 1234.0
    finally:
        provider.unload()
