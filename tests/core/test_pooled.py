"""`provender.PooledProvider`: files under a cache lease, one load per key, kinds, typed options."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provender import (
    CacheManager,
    InvalidOptionError,
    LoadedModel,
    ModelNotFoundError,
    PooledProvider,
    UnsupportedError,
    check_options,
    model_pool,
)


class Words(PooledProvider):
    """Reads words.txt: a "model" that is real files, loaded into the real pool."""

    name = "words"
    loads = 0

    def __init__(self, model: str, *, device: str | None = None) -> None:
        super().__init__(model, device=device)

    def fetch(self, cache: CacheManager) -> None:
        raise ModelNotFoundError(self.model, "not cached")

    def load_files(self, path: Path) -> LoadedModel:
        type(self).loads += 1
        text = (path / "words.txt").read_text()  # a missing file fails the load
        return LoadedModel(self.model, text.split(), kind="embedding" if "embed" in text else "generation")

    def generate(self, prompt: str, **options: Any) -> str:
        self.check_options(options)
        with self.using("generation") as item:
            return " ".join(item.model[: options.get("max_tokens") or None])


@pytest.fixture(autouse=True)
def cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch, make_files: Any) -> Iterator[CacheManager]:
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    cm = CacheManager()
    cm.import_model(make_files("a", {"words.txt": b"one two three"}), "me/words")
    cm.import_model(make_files("e", {"words.txt": b"embed me"}), "me/embedder")
    cm.import_model(make_files("b", {"other.txt": b"x"}), "me/broken")
    Words.clear_model_cache()
    yield cm
    Words.clear_model_cache()


def test_loads_once_under_a_lease_and_unloads(cache: CacheManager) -> None:
    Words.loads = 0
    assert Words("me/words").generate("", max_tokens=2) == "one two"
    assert Words("me/words").generate("") == "one two three"
    assert Words.loads == 1 and "words:me/words" in model_pool() and cache.in_use("me/words")
    Words("me/words").unload()
    assert "words:me/words" not in model_pool() and not cache.in_use("me/words")


def test_a_failed_load_releases_its_lease(cache: CacheManager) -> None:
    with pytest.raises(FileNotFoundError):
        Words("me/broken").generate("")
    assert not cache.in_use("me/broken") and "words:me/broken" not in model_pool()
    with pytest.raises(ModelNotFoundError, match="not cached"):
        Words("me/nothing-here").generate("")


def test_keyword_arguments_are_part_of_the_key_and_clear_takes_every_copy() -> None:
    a, b = Words("me/words"), Words("me/words", device="x")
    assert (a.key, b.key) == ("words:me/words", "words:me/words?device=x")
    a.generate(""), b.generate("")
    assert Words.clear_model_cache("me/words") == ["me/words"]
    assert model_pool().keys("words") == []


def test_the_kind_and_the_options_are_checked() -> None:
    with pytest.raises(UnsupportedError, match="is an embedding model"):
        Words("me/embedder").generate("")
    with (
        pytest.raises(UnsupportedError, match="embeddings need an embedding model"),
        Words("me/words").using("embedding"),
    ):
        pass
    with pytest.raises(UnsupportedError, match="option 'top_k'"):
        Words("me/words").generate("", top_k=3)
    with pytest.raises(ModelNotFoundError, match="empty"):
        Words(" ")


@pytest.mark.parametrize(("option", "value"), [("batch_size", 0), ("normalize", 1), ("max_length", 1)])
def test_one_table_of_embedding_options(option: str, value: object) -> None:
    with pytest.raises(InvalidOptionError, match=option):
        check_options({option: value}, [option])
    assert check_options({option: None}, [option]) == {option: None}  # None: the default


@pytest.mark.parametrize(
    ("option", "value"), [("top_k", -1), ("min_p", 2), ("repeat_penalty", 0), ("system_prompt", 3)]
)
def test_generation_options_are_typed_once(option: str, value: object) -> None:
    from provender.generation import parse_options

    with pytest.raises(InvalidOptionError, match=option):
        parse_options({option: value}, [option])
    assert parse_options({option: None}, [option]).set() == {}  # None: the default
