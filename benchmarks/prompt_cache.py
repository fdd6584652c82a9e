"""Issue 22's workload: time to first token at each turn of a conversation, with and without the prompt cache.

    python benchmarks/prompt_cache.py [--repeat 3] [--turns 10] [--no-serve]   (writes results-prompt-cache.json)
    python benchmarks/prompt_cache.py --disk [--repeat 3] [--provider mlx|transformers|llamacpp]
        (only section 3, merged into the same file)
    python benchmarks/prompt_cache.py --vs-mlx-lm [--repeat 3]      (section 4, merged)
    python benchmarks/prompt_cache.py --interleaved [--repeat 3] --provider transformers|llamacpp|mlx [--serve]
        (section 5, merged)
    python benchmarks/prompt_cache.py --agent [--repeat 3] [--provider mlx|transformers]   (section 6, merged)

A tiny random MLX llama (hidden 256, 4 layers) built on the spot; a system prompt and ten user
turns of about 60 words, ``max_tokens=8``, each reply appended to the conversation. Measured

1. in process: `MLXProvider.stream_chat`, with ``memory.prompt_cache_bytes`` at its default and at 0;
2. through ``provender serve`` with the real ``openai`` client, streaming (the server decodes on
   MLX's `BatchSession`), with the cache on and off (one server at a time).

3. ``--disk``, a saved prompt cache (issue 22 item 3): on the benchmarks' larger model of the
   provider (MLX: hidden 512, 8 layers, as serve_bench and dialects; transformers: hidden 576, 12
   layers, as transformers_bench; llama.cpp: n_embd 512, 6 layers, F32, as llamacpp_bench), a system
   prompt of at least 2,000 tokens saved once with
   `PooledProvider.save_prompt` (what ``provender cache prompt`` does); then, each time in a fresh
   load of the model (loaded, but it never saw the prefix), time to first token of that system
   prompt plus a question, reading the saved state from the disk cache against computing it
   (``cache.prompt_cache_max_size = 0``: nothing read). The two alternate, after one warm-up of each.

4. ``--vs-mlx-lm``: issue 22's comparison in one run, ``provender serve`` against ``mlx_lm.server``
   (mlx-lm's own server, its default prompt cache) on the same model directory and messages, one
   server at a time through the ``openai`` client, streaming. Each repeat starts a fresh server of
   each kind (the two alternate, the order swapped every repeat), warms it up with a two-turn
   conversation of its own system prompt, then measures a conversation whose system prompt is the
   repeat's own: a genuine first visit on both servers.

5. ``--interleaved``: two conversations on one loaded model, turn k of A then turn k of B, with
   the cache at its default and at 0; a fresh load each repeat (and a two-turn warm-up of another
   system prompt), distinct system prompts for every conversation. In process through the
   provider's ``stream_chat``, or with ``--serve`` through ``provender serve`` and the ``openai``
   client (a fresh server each repeat). The tiny model of the provider: hidden 256, 4 layers, as in 1.

6. ``--agent``: a 10-step provender-agent loop (`provender_agent.Agent`, ``max_steps=10``) on the
   tiny MLX llama of tests/agent that emits only ``<tool_call>`` (``constant_token``), unconstrained,
   ``max_tokens=16``: every step's reply is a malformed call that the agent feeds back to the model as a
   tool error, so the loop always runs its 10 steps over a growing conversation (the chat template
   with the tool's schema, a system prompt of about 500 words); with ``memory.prompt_cache_bytes``
   at its default and at 0, alternating, a fresh load each: total time and each step's time
   (`Step.seconds`).

Time to first token is from the call to the first non-empty piece of text, or the end of the
reply when it has none. Medians over ``--repeat`` conversations (a fresh load each).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

RESULTS = Path(__file__).parent / "results-prompt-cache.json"
TEXT = (
    "the model reads every message of the conversation again at each turn unless it keeps the state "
    "of what it has already read so a long chat grows slower with each reply while a cache of that "
    "state lets the next turn read only its own new words and answer at once"
)
WORDS = TEXT.split()
REPORTED = (1, 2, 5, 10)


def user_turn(n: int) -> str:
    return " ".join(WORDS[(7 * n + i) % len(WORDS)] for i in range(60))


def first_token(pieces: Iterator[str]) -> tuple[float, str]:
    started = time.perf_counter()
    text, first = "", None
    for piece in pieces:
        if piece and first is None:
            first = time.perf_counter() - started
        text += piece
    return (first if first is not None else time.perf_counter() - started), text


def conversation(
    ask: Callable[[list[dict[str, str]]], Iterator[str]], turns: int, system: int = 0, said: list[str] | None = None
) -> list[float]:
    """TTFT at each turn; `system` varies the system prompt (the warm-up's shares no prefix with the others)."""
    messages = [{"role": "system", "content": f"{system}: You are a helpful assistant. " + user_turn(99)}]
    times = []
    for n in range(turns):
        messages.append({"role": "user", "content": user_turn(n)})
        seconds, text = first_token(ask(messages))
        times.append(seconds)
        print(f"  turn {n + 1}: {seconds:.3f} s", file=sys.stderr, flush=True)
        messages.append({"role": "assistant", "content": text})
        if said is not None:
            said.append(text)
    return times


def in_process(model: Path, turns: int, repeat: int, cache_bytes: str | None) -> list[list[float]]:
    from provender_mlx import MLXProvider

    if cache_bytes is None:
        os.environ.pop("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", None)
    else:
        os.environ["PROVENDER_MEMORY__PROMPT_CACHE_BYTES"] = cache_bytes
    runs = []
    for i in range(repeat + 1):  # the first, two-turn conversation warms up (kernels, imports): not counted
        MLXProvider.clear_model_cache()
        p = MLXProvider(str(model))
        p.load_model()
        runs.append(conversation(lambda m, p=p: p.stream_chat(m, max_tokens=8), turns if i else 2, i))
    MLXProvider.clear_model_cache()
    return runs[1:]


def through_serve(model: Path, turns: int, repeat: int, cache_bytes: str | None) -> list[list[float]]:
    import openai
    from serve_bench import free_port, start, stop

    port = free_port()
    env = {**os.environ, "PROVENDER_SERVER__PORT": str(port)}
    env.pop("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", None)
    if cache_bytes is not None:
        env["PROVENDER_MEMORY__PROMPT_CACHE_BYTES"] = cache_bytes
    proc = start([sys.executable, "-m", "provender", "serve"], env, f"http://127.0.0.1:{port}/health")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")

    def ask(messages: list[dict[str, str]]) -> Iterator[str]:
        stream = client.chat.completions.create(
            model=str(model), messages=messages, max_tokens=8, stream=True, temperature=0
        )
        for event in stream:
            if event.choices:
                yield event.choices[0].delta.content or ""

    try:
        # each conversation new to the server (its own system prompt); the first, two turns, loads the model
        runs = [conversation(ask, turns if i else 2, i) for i in range(repeat + 1)]
    finally:
        stop(proc)
    return runs[1:]


def long_system(p: Any, tokens: int) -> str:
    """A system prompt of at least `tokens` tokens for `p`'s model (the words of TEXT, numbered)."""
    parts: list[str] = []
    while True:
        parts.append(f"Rule {len(parts) + 1}: " + user_turn(len(parts)) + ".")
        text = " ".join(parts) + "\n"
        if p.count_tokens(text) >= tokens:
            return text


def _larger_model(root: Path, provider: str, long_context: bool = False) -> tuple[str, str, Callable[..., Any]]:
    """The benchmarks' larger model for `provider`: its path, a description, and the provider class
    (`long_context`: a GGUF that records a 4,096-token training context, `_long_gguf`)."""
    if provider == "transformers":
        from provender_transformers import TransformersProvider
        from provender_transformers.testing import build_tiny_llama as build_tf

        path = build_tf(root / "bench-llama-576", seed=0, hidden_size=576, layers=12)  # as transformers_bench
        return str(path), "transformers llama hidden 576, 12 layers (random weights)", TransformersProvider
    if provider == "llamacpp":
        from provender_llamacpp import LlamaCppProvider
        from provender_llamacpp.testing import build_tiny_llama as build_gguf

        build = functools.partial(_long_gguf, build_gguf) if long_context else build_gguf
        path = build(root / "bench-llama-F32.gguf", n_embd=512, n_layer=6, vocab_size=2000)  # as llamacpp_bench
        return str(path), "llama.cpp llama n_embd 512, 6 layers, F32 (random weights)", LlamaCppProvider
    from provender_mlx import MLXProvider
    from provender_mlx.testing import build_tiny_llama

    path = build_tiny_llama(root / "bench-llama-512", hidden_size=512, layers=8, vocab_size=300)
    return str(path), "mlx llama hidden 512, 8 layers (random weights)", MLXProvider


def disk_section(root: Path, repeat: int, provider: str = "mlx", tokens: int = 2000) -> dict[str, Any]:
    """Section 3: first token with a saved system prompt read from the disk cache, against computing it.
    llama.cpp caps its context at the GGUF's training context (2,048 here): 1,900 tokens there."""
    if provider == "llamacpp":
        tokens = min(tokens, 1900)
    from provender import CacheManager, model_pool

    os.environ.setdefault("PROVENDER_LLAMACPP__N_CTX", "4096")  # room for the system prompt
    model, described, cls = _larger_model(root, provider)
    on = CacheManager(root / "cache", max_size="20GB")
    off = CacheManager(root / "cache", max_size="20GB", prompt_max_size=0)  # the same cache, nothing read

    def fresh(cache: CacheManager) -> Any:
        model_pool().clear()
        p = cls(model, cache=cache)
        p.load_model()
        return p

    p = fresh(on)
    system = long_system(p, tokens)
    started = time.perf_counter()
    entry = p.save_prompt(system)
    save_s = time.perf_counter() - started
    n = int(entry.metadata["prompt"]["tokens"])
    print(f"  saved {n} tokens ({entry.size / 1e6:.1f} MB) in {save_s:.2f} s", file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {"disk": [], "computed": []}
    for i in range(repeat + 1):  # the first of each warms up: not counted
        for name, cache in (("disk", on), ("computed", off)):
            p = fresh(cache)
            question = f"Question {i}: which rule says " + " ".join(WORDS[i : i + 6]) + "?"
            seconds, _ = first_token(p.stream(system + question, max_tokens=8))
            stats = p.prompt_cache().stats
            assert stats.disk_hits == (1 if name == "disk" else 0), stats
            print(f"  {name}: {seconds:.3f} s (prefilled {stats.last_prefilled})", file=sys.stderr, flush=True)
            if i:
                times[name].append(seconds)
    model_pool().clear()
    disk, computed = statistics.median(times["disk"]), statistics.median(times["computed"])
    return {
        "model": described,
        "system_tokens": n,
        "saved_bytes": entry.size,
        "save_s": round(save_s, 3),
        "median_ttft_disk_s": round(disk, 4),
        "median_ttft_computed_s": round(computed, 4),
        "speedup": round(computed / disk, 1),
        "runs": times,
    }


def load() -> list[float]:
    """The machine's load averages (1, 5, 15 minutes) now."""
    return [round(x, 2) for x in os.getloadavg()]


def openai_ask(
    base: str, model: str, replies: list[str] | None = None
) -> Callable[[list[dict[str, str]]], Iterator[str]]:
    """A streaming chat through the real ``openai`` client at `base` (greedy, ``max_tokens=8``)."""
    import openai

    client = openai.OpenAI(base_url=base, api_key="none", max_retries=0)

    def ask(messages: list[dict[str, str]]) -> Iterator[str]:
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=8,
            stream=True,
            temperature=0,  # type: ignore[arg-type]
        )
        for event in stream:
            if event.choices:
                yield event.choices[0].delta.content or ""

    return ask


def server(kind: str, model: str, env: dict[str, str]) -> tuple[Any, str]:
    """Start ``provender serve`` or ``mlx_lm.server`` on a free port: the process and its /v1 address."""
    from serve_bench import free_port, start

    port = free_port()
    if kind == "mlx_lm.server":  # mlx-lm's own server, its prompt cache at its defaults
        cmd = [sys.executable, "-m", "mlx_lm.server", "--model", model, "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "provender", "serve", "--port", str(port), "--max-models", "1"]
    proc = start(cmd, env, f"http://127.0.0.1:{port}/health")
    return proc, f"http://127.0.0.1:{port}/v1"


def vs_mlx_lm(model: Path, turns: int, repeat: int) -> dict[str, Any]:
    """Section 4: TTFT per turn through ``provender serve`` and ``mlx_lm.server``, a fresh server each repeat."""
    from serve_bench import stop

    env = {**os.environ}
    env.pop("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", None)
    kinds = ["provender serve", "mlx_lm.server"]
    runs: dict[str, list[list[float]]] = {k: [] for k in kinds}
    replies: dict[str, list[list[str]]] = {k: [] for k in kinds}
    loads = [load()]
    for i in range(repeat):
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            print(f" {kind}, repeat {i + 1}", file=sys.stderr, flush=True)
            proc, base = server(kind, str(model), env)
            try:
                conversation(openai_ask(base, str(model)), 2, 1000 + i)  # loads the model; another prefix
                said: list[str] = []
                runs[kind].append(conversation(openai_ask(base, str(model)), turns, i + 1, said))
                replies[kind].append(said)
            finally:
                stop(proc)
            loads.append(load())
    out: dict[str, Any] = {k.replace(" ", "_").replace(".", "_"): summary(runs[k]) for k in kinds}
    ours, theirs = out["provender_serve"]["median_s_by_turn"], out["mlx_lm_server"]["median_s_by_turn"]
    out["turn_last_over_mlx_lm"] = round(ours[-1] / theirs[-1], 2)
    out["over_mlx_lm_by_turn"] = [round(a / b, 3) for a, b in zip(ours, theirs, strict=True)]
    # each repeat's two servers ran back to back: their ratio at the last turn, less exposed to the machine's drift
    paired = [a[-1] / b[-1] for a, b in zip(runs["provender serve"], runs["mlx_lm.server"], strict=True)]
    out["turn_last_paired"] = [round(x, 3) for x in paired]
    out["turn_last_paired_median"] = round(statistics.median(paired), 3)
    out["same_replies"] = replies["provender serve"] == replies["mlx_lm.server"]
    out["load"] = loads
    return out


def _long_gguf(build: Callable[..., Path], path: Path, **kwargs: Any) -> Path:
    """A test GGUF that records a 4,096-token training context: the test GGUFs record 2,048, where the
    provider caps ``n_ctx``, and section 5's conversations reach about 2,200 to 2,700 tokens."""
    import gguf

    add_context_length = gguf.GGUFWriter.add_context_length
    gguf.GGUFWriter.add_context_length = lambda self, n: add_context_length(self, max(n, 4096))  # type: ignore[method-assign]
    try:
        return build(path, **kwargs)
    finally:
        gguf.GGUFWriter.add_context_length = add_context_length  # type: ignore[method-assign]


def _tiny_model(root: Path, provider: str) -> tuple[str, Callable[..., Any]]:
    """The tiny model of `provider` (hidden 256, 4 layers, as section 1's MLX llama) and its class."""
    if provider == "transformers":
        from provender_transformers import TransformersProvider
        from provender_transformers.testing import build_tiny_llama as build_tf

        return str(build_tf(root / "tiny-tf-256", hidden_size=256, layers=4)), TransformersProvider
    if provider == "llamacpp":
        from provender_llamacpp import LlamaCppProvider
        from provender_llamacpp.testing import build_tiny_llama as build_gguf

        path = _long_gguf(build_gguf, root / "tiny-256.gguf", n_embd=256, n_layer=4, vocab_size=400)
        os.environ.setdefault("PROVENDER_LLAMACPP__N_CTX", "4096")
        return str(path), LlamaCppProvider
    from provender_mlx import MLXProvider
    from provender_mlx.testing import build_tiny_llama

    return str(build_tiny_llama(root / "tiny-llama-256", hidden_size=256, layers=4, vocab_size=400)), MLXProvider


def _set_cache_bytes(env: dict[str, str], cache_bytes: str | None) -> None:
    env.pop("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", None)
    if cache_bytes is not None:
        env["PROVENDER_MEMORY__PROMPT_CACHE_BYTES"] = cache_bytes


def interleaved(
    root: Path, provider: str, turns: int, repeat: int, serve: bool, baseline: bool, larger: bool = False
) -> dict[str, Any]:
    """Section 5: two conversations interleaved on one loaded model, TTFT per turn, cache on (and off)."""
    from serve_bench import stop

    from provender import model_pool

    if larger:
        model, described, cls = _larger_model(root, provider, long_context=True)
        os.environ.setdefault("PROVENDER_LLAMACPP__N_CTX", "4096")
    else:
        model, cls = _tiny_model(root, provider)
        described = f"{provider} llama hidden 256, 4 layers (random weights)"
    name = f"{provider}:{model}"
    out: dict[str, Any] = {"model": described, "serve": serve}
    for label, cache_bytes in (("cache", None), ("no_cache", "0"))[: 2 if baseline else 1]:
        runs: list[list[float]] = []
        prefilled: list[list[int]] = []
        held: list[list[int]] = []  # in process, after each repeat: states held, their bytes, evictions
        loads = [load()]
        for i in range(repeat):
            print(f" {provider} {label}, repeat {i + 1}", file=sys.stderr, flush=True)
            proc = None
            if serve:
                env = {**os.environ}
                _set_cache_bytes(env, cache_bytes)
                proc, base = server("provender serve", model, env)
                ask = openai_ask(base, name)
                stats: Callable[[], int] = lambda: -1  # noqa: E731 (another process)
            else:
                _set_cache_bytes(os.environ, cache_bytes)
                model_pool().clear()
                p = cls(model)
                p.load_model()

                def ask(m: list[dict[str, str]], p: Any = p) -> Iterator[str]:
                    return p.stream_chat(m, max_tokens=8, temperature=0)

                def stats(p: Any = p) -> int:
                    cache = p.prompt_cache()
                    return int(cache.stats.last_prefilled) if cache is not None and cache.enabled else -1

            try:
                conversation(ask, 2, 1000 + i)  # warm-up (and, through the server, the load): another prefix
                a = [{"role": "system", "content": f"{2 * i + 1}: You are a helpful assistant. " + user_turn(99)}]
                b = [{"role": "system", "content": f"{2 * i + 2}: You are a helpful assistant. " + user_turn(99)}]
                times: dict[str, list[float]] = {"A": [], "B": []}
                fed: dict[str, list[int]] = {"A": [], "B": []}
                for n in range(turns):
                    for key, messages in (("A", a), ("B", b)):
                        messages.append({"role": "user", "content": user_turn(n)})
                        seconds, text = first_token(ask(messages))
                        times[key].append(seconds)
                        fed[key].append(stats())
                        messages.append({"role": "assistant", "content": text})
                        print(f"  turn {n + 1} {key}: {seconds:.3f} s (prefilled {fed[key][-1]})", file=sys.stderr)
                runs += [times["A"], times["B"]]
                prefilled += [fed["A"], fed["B"]]
                if not serve and (cache := p.prompt_cache()) is not None:
                    held.append([len(cache), cache.nbytes, cache.stats.evictions])
            finally:
                if proc is not None:
                    stop(proc)
            loads.append(load())
        model_pool().clear()
        section = summary(runs)
        section["prefilled_tokens"] = prefilled
        section["states_bytes_evictions"] = held
        section["load"] = loads
        out[label] = section
    _set_cache_bytes(os.environ, None)
    return out


def agent_loop(root: Path, provider: str, repeat: int, steps: int = 10) -> dict[str, Any]:
    """Section 6: a `steps`-step agent loop with the prompt cache at its default and at 0, alternating."""
    from provender import model_pool
    from provender_agent import Agent, tool

    @tool
    def add(a: int, b: bool) -> str:
        """Add one, or not.

        Args:
            a: a number
            b: whether to add
        """
        return str(a + 1 if b else a)

    if provider == "transformers":
        raise SystemExit("--agent runs on MLX (its tiny model that favours <tool_call>)")
    from provender_mlx import MLXProvider
    from provender_mlx.testing import build_tiny_llama

    model = str(build_tiny_llama(root / "caller", constant_token="<tool_call>"))
    system = "You are an agent that adds numbers with its tool. " + " ".join(user_turn(k) for k in range(8))
    runs: dict[str, list[dict[str, Any]]] = {"cache": [], "no_cache": []}
    loads = [load()]
    for i in range(repeat + 1):  # the first of each warms up: not counted
        for label, cache_bytes in (("cache", None), ("no_cache", "0"))[:: 1 if i % 2 == 0 else -1]:
            _set_cache_bytes(os.environ, cache_bytes)
            model_pool().clear()
            p = MLXProvider(model)
            p.load_model()
            # unconstrained: each reply is "<tool_call>" 16 times, a malformed call the agent feeds back as
            # an error (constrained, this model answers at step 2: its tied logits pick the lowest allowed id)
            agent = Agent(
                p,
                tools=[add],
                system=f"{i}: {system}",
                max_steps=steps,
                constrain=False,
                options={"max_tokens": 16, "temperature": 0},
            )
            started = time.perf_counter()
            result = agent.run(f"{i}: Add one to 41, then keep adding one to each result.")
            total = time.perf_counter() - started
            cache = p.prompt_cache()
            run = {
                "total_s": total,
                "steps": len(result.steps),
                "step_s": [s.seconds for s in result.steps],
                "tool_runs": len(result.tool_runs),
                "outcome": result.outcome,
                "prefilled_tokens": cache.stats.prefilled_tokens if cache is not None else None,
                "cached_tokens": cache.stats.cached_tokens if cache is not None else None,
            }
            print(
                f"  {label}: {total:.2f} s, {len(result.steps)} steps, {len(result.tool_runs)} tool runs, "
                f"prefilled {run['prefilled_tokens']}",
                file=sys.stderr,
                flush=True,
            )
            if i:
                runs[label].append(run)
        loads.append(load())
    model_pool().clear()
    _set_cache_bytes(os.environ, None)
    out: dict[str, Any] = {
        "model": "mlx tiny llama that emits only <tool_call> (tests/agent's), unconstrained, max_tokens 16",
        "max_steps": steps,
    }
    for label, rs in runs.items():
        per_step = [statistics.median(col) for col in zip(*[r["step_s"] for r in rs], strict=False)]
        out[label] = {
            "median_total_s": round(statistics.median(r["total_s"] for r in rs), 3),
            "median_step_s": [round(x, 3) for x in per_step],
            "runs": rs,
        }
    out["total_speedup"] = round(out["no_cache"]["median_total_s"] / out["cache"]["median_total_s"], 2)
    out["load"] = loads
    return out


def summary(runs: list[list[float]]) -> dict[str, Any]:
    medians = [statistics.median(turn) for turn in zip(*runs, strict=True)]
    return {
        "median_s_by_turn": [round(m, 4) for m in medians],
        "last_over_first": round(medians[-1] / medians[0], 2),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--no-serve", action="store_true", help="only the in-process figures")
    parser.add_argument("--disk", action="store_true", help="only section 3 (a saved prompt cache on disk)")
    parser.add_argument("--provider", choices=["mlx", "transformers", "llamacpp"], default="mlx")
    parser.add_argument("--vs-mlx-lm", action="store_true", help="only section 4 (provender serve vs mlx_lm.server)")
    parser.add_argument("--interleaved", action="store_true", help="only section 5 (two conversations interleaved)")
    parser.add_argument("--serve", action="store_true", help="section 5 through provender serve")
    parser.add_argument("--no-baseline", action="store_true", help="section 5 without prompt_cache_bytes = 0")
    parser.add_argument("--larger", action="store_true", help="section 5 on the benchmarks' larger model (as --disk)")
    parser.add_argument("--agent", action="store_true", help="only section 6 (an agent loop)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file to merge into")
    args = parser.parse_args()
    results_file = args.results
    if args.disk:
        with tempfile.TemporaryDirectory() as tmp:
            section = disk_section(Path(tmp), args.repeat, args.provider)
        section["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        old = json.loads(results_file.read_text()) if results_file.exists() else {}
        key = "disk" if args.provider == "mlx" else f"disk_{args.provider}"
        results_file.write_text(json.dumps({**old, key: section}, indent=1))
        print(
            f"first token, {section['system_tokens']}-token system prompt: saved on disk "
            f"{section['median_ttft_disk_s']} s, computed {section['median_ttft_computed_s']} s "
            f"({section['speedup']}x)"
        )
        return
    if args.vs_mlx_lm or args.interleaved or args.agent:
        with tempfile.TemporaryDirectory() as tmp:
            if args.vs_mlx_lm:
                from provender_mlx.testing import build_tiny_llama

                key = "vs_mlx_lm"
                model = build_tiny_llama(Path(tmp) / "tiny-llama-256", hidden_size=256, layers=4, vocab_size=400)
                section = vs_mlx_lm(model, args.turns, args.repeat)
            elif args.interleaved:
                key = "_".join(["interleaved", args.provider] + ["larger"] * args.larger + ["serve"] * args.serve)
                section = interleaved(
                    Path(tmp), args.provider, args.turns, args.repeat, args.serve, not args.no_baseline, args.larger
                )
            else:
                key = f"agent_{args.provider}"
                section = agent_loop(Path(tmp), args.provider, args.repeat)
        section.update(turns=args.turns, repeat=args.repeat, when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        old = json.loads(results_file.read_text()) if results_file.exists() else {}
        results_file.write_text(json.dumps({**old, key: section}, indent=1))
        for name, value in section.items():
            if isinstance(value, dict) and "median_s_by_turn" in value:
                picked = [value["median_s_by_turn"][t - 1] for t in REPORTED if t <= args.turns]
                print(f"{key} {name:16} turns {REPORTED}: {picked}  last/first {value['last_over_first']}")
            elif isinstance(value, dict) and "median_total_s" in value:
                print(f"{key} {name:10} total {value['median_total_s']} s, per step {value['median_step_s']}")
        extras = ("turn_last_over_mlx_lm", "over_mlx_lm_by_turn", "turn_last_paired_median", "same_replies")
        for extra in (*extras, "total_speedup", "load"):
            if extra in section:
                print(f"{extra}: {section[extra]}")
        return
    from provender_mlx.testing import build_tiny_llama

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_llama(Path(tmp) / "tiny-llama-256", hidden_size=256, layers=4, vocab_size=400)
        results: dict[str, Any] = {"turns": args.turns, "repeat": args.repeat, "max_tokens": 8}
        for name, bytes_ in (("cache", None), ("no_cache", "0")):
            results[f"in_process_{name}"] = summary(in_process(model, args.turns, args.repeat, bytes_))
        if not args.no_serve:
            for name, bytes_ in (("cache", None), ("no_cache", "0")):
                results[f"serve_{name}"] = summary(through_serve(model, args.turns, args.repeat, bytes_))
    results["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    old = json.loads(results_file.read_text()) if results_file.exists() else {}
    results_file.write_text(json.dumps({**old, **results}, indent=1))
    for key, value in results.items():
        if isinstance(value, dict) and "median_s_by_turn" in value:
            picked = [value["median_s_by_turn"][t - 1] for t in REPORTED if t <= args.turns]
            print(f"{key:22} turns {REPORTED}: {picked}  last/first {value['last_over_first']}")


if __name__ == "__main__":
    main()
