"""From a model name to a GGUF file on disk (through the shared cache), and from that file to a `llama_cpp.Llama`.

Names a user can give:

- a path to a ``.gguf`` file (or to a directory holding one);
- a cache entry: ``me/x`` (imported), ``ollama/llama3.2-1b`` (imported from Ollama);
- a Hub repo, optionally with a quantisation tag: ``org/repo-GGUF:Q4_K_M``. A repo not yet
  cached is pulled, that quantisation only; without a tag, the repo's only GGUF, else Q4_K_M.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender import EntryNotFoundError, GGUFFormatError, InvalidNameError, ModelNotFoundError
from provender._cache._gguf import (
    gguf_in,
    is_gguf,
    read_gguf_metadata,
    select_quant,
    split_tag,
)
from provender._detect import sentence_transformers_config
from provender._resolve import may_read_path

if TYPE_CHECKING:
    from provender import CacheManager, Lease

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    'pip install "provender[llamacpp]" (builds llama.cpp for this CPU; for CUDA: '
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install "provender[llamacpp]"; see docs/llamacpp.md)'
)
# Encoder-only architectures llama.cpp runs for embeddings (no text generation).
ENCODER_ARCHS = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "neo-bert", "modern-bert", "t5encoder"}
)


def require_llama_cpp() -> None:
    """Raise ImportError with the install command if llama-cpp-python is missing (without importing it)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ImportError(f"llama-cpp-python is not installed; install it with: {INSTALL_HINT}")


@dataclass(frozen=True)
class GGUFInfo:
    """What provender needs to know about a GGUF file before loading it."""

    path: Path
    architecture: str
    embedding: bool  # an embedding model (pooled vectors), not a text generator
    chat_template: bool  # carries tokenizer.chat_template
    context_length: int  # the model's training context (0 if the file does not say)
    max_seq_length: int | None = None  # an embedding model's sentence-transformers limit, where known
    rerank: bool = False  # a reranker: rank pooling (one relevance logit per sequence)


MAX_SEQ_LENGTH_KEY = "sentence_transformers.max_seq_length"  # recorded by convert_bert; llama.cpp ignores it
RANK_POOLING = 4  # LLAMA_POOLING_TYPE_RANK in a GGUF's {arch}.pooling_type: a reranker


def inspect_gguf(path: Path, root: Path | None = None) -> GGUFInfo:
    """Read a GGUF header (not its tensors) and classify the model.

    An embedding model's sentence-transformers ``max_seq_length`` comes from the header
    (`MAX_SEQ_LENGTH_KEY`) or from a ``sentence_bert_config.json`` beside the file, or in a
    folder above it up to `root` (a Hub snapshot, an imported directory).
    """
    try:
        meta = read_gguf_metadata(path)
    except GGUFFormatError as exc:  # its message names the file and what is wrong with its header
        raise ModelNotFoundError(str(path), str(exc)) from None
    except OSError as exc:
        raise ModelNotFoundError(str(path), f"not a readable GGUF file: {exc}") from None
    arch = str(meta.get("general.architecture", ""))
    pooling = meta.get(f"{arch}.pooling_type")
    causal = meta.get(f"{arch}.attention.causal", True)
    embedding = arch in ENCODER_ARCHS or (isinstance(pooling, int) and pooling > 0) or causal is False
    ctx = meta.get(f"{arch}.context_length", 0)
    limit = meta.get(MAX_SEQ_LENGTH_KEY)
    if embedding and not isinstance(limit, int):
        folders = [path.parent, *(p for p in path.parent.parents if root is not None and root in (p, *p.parents))]
        found = (sentence_transformers_config(d) for d in folders)
        limit = next((c.max_seq_length for c in found if c is not None and c.max_seq_length), None)
    return GGUFInfo(
        path=path,
        architecture=arch,
        embedding=embedding,
        chat_template=isinstance(meta.get("tokenizer.chat_template"), str),
        context_length=int(ctx) if isinstance(ctx, int) else 0,
        max_seq_length=limit if isinstance(limit, int) and limit > 1 else None,
        rerank=pooling == RANK_POOLING,
    )


def _pick(root: Path, quant: str | None, label: str) -> Path:
    """The GGUF model file at `root` (a file, or a directory such as a Hub snapshot), by quant tag."""
    if root.is_file():
        if not is_gguf(root):
            raise ModelNotFoundError(label, f"{root} is not a GGUF file")
        return root
    files = gguf_in(root)
    if not files:
        raise ModelNotFoundError(label, f"{root} holds no GGUF file")
    names = [str(p.relative_to(root)) for p in files]
    return root / select_quant(names, quant, repo=label)[0]


def resolve_gguf(model: str, cache: CacheManager | None = None, *, progress: bool = True) -> tuple[Path, Lease | None]:
    """The GGUF file `model` names, and the cache lease that keeps it on disk (None outside the cache).

    A Hub repo (``org/repo-GGUF[:QUANT]``) that is not cached, or lacks that quantisation,
    is pulled first: only the chosen file (and its split parts).
    """
    local = Path(model).expanduser()
    if may_read_path(model) and local.exists():
        return _pick(local, None, model), None
    base, quant = split_tag(model)
    from provender import CacheManager

    cm = cache or CacheManager()
    lease = _acquire(cm, base)
    if lease is None:
        _pull(cm, base, quant, progress)
        lease = cm.acquire(base)
    try:
        return _pick(lease.entry.model_path, quant, base), lease
    except ModelNotFoundError:
        if lease.entry.kind != "hub" or quant is None:
            lease.release()
            raise
    lease.release()  # a Hub repo without that quantisation yet: pull it, then take it
    _pull(cm, base, quant, progress)
    lease = cm.acquire(base)
    try:
        return _pick(lease.entry.model_path, quant, base), lease
    except BaseException:
        lease.release()
        raise


def _acquire(cm: CacheManager, name: str) -> Lease | None:
    try:
        return cm.acquire(name)
    except (EntryNotFoundError, InvalidNameError):
        return None


def _pull(cm: CacheManager, repo_id: str, quant: str | None, progress: bool) -> None:
    from provender._cache._gguf import quant_request

    try:
        repo, files = quant_request(
            cm,
            f"{repo_id}:{quant}" if quant else repo_id,
            revision=None,
            repo_type="model",
            allow_patterns=None,
            endpoint=None,
            pick_default=True,
        )
    except InvalidNameError:
        raise ModelNotFoundError(repo_id, "no such GGUF file, cached model or Hub repo id") from None
    cm.fetch(repo, allow_patterns=files, progress=progress)


def load_llama(info: GGUFInfo, *, n_ctx: int, threads: int | None, n_gpu_layers: int) -> Any:
    """A `llama_cpp.Llama` for the file, set up for generation or for embeddings.

    Chat uses the template stored in the GGUF (llama-cpp-python's Jinja2 chat handler),
    never a built-in format guessed from it, so tools reach the template.
    """
    require_llama_cpp()
    from llama_cpp import Llama

    kwargs: dict[str, Any] = {
        "n_gpu_layers": n_gpu_layers,
        "n_threads": threads,
        "n_threads_batch": threads,
        "verbose": False,
    }
    if info.embedding:
        ctx = info.context_length or 512
        ctx = min(n_ctx, ctx) if n_ctx else ctx
        kwargs |= {"embedding": True, "n_ctx": ctx, "n_batch": ctx, "n_ubatch": ctx}
        if info.rerank:
            kwargs["pooling_type"] = RANK_POOLING
    else:  # beyond the training context a model degrades: n_ctx is capped there (0 takes it whole)
        train = info.context_length
        kwargs |= {"n_ctx": min(n_ctx, train) if n_ctx and train else n_ctx or train}
        if info.chat_template:
            kwargs["chat_format"] = "chat_template.default"
    try:
        return Llama(model_path=str(info.path), **kwargs)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelNotFoundError(
            str(info.path), f"llama.cpp could not load it ({exc}); is it a complete GGUF of a supported architecture?"
        ) from None
