"""provender.testing's contract suite, against LlamaCppProvider resolved through the real plugin manager."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from provender.testing import ProviderContract


class TestGenerationContract(ProviderContract):
    provider_name = "llamacpp"
    model = ""  # set per session: the tiny llama GGUF's path (llamacpp:/path/to/tiny-F32.gguf)
    capabilities = {"generate", "stream", "chat"}

    @pytest.fixture(autouse=True)
    def _model(self, tiny_gguf: Path) -> None:
        type(self).model = str(tiny_gguf)


class TestEmbeddingContract(ProviderContract):
    provider_name = "llamacpp"
    model = ""
    capabilities = {"embed"}

    @pytest.fixture(autouse=True)
    def _model(self, minilm_gguf: Path) -> None:
        type(self).model = str(minilm_gguf)


def test_help_and_plugins_do_not_import_llama_cpp() -> None:
    code = (
        "import sys; from provender._cli import _build; _build(); "
        "from provender import get_plugin_manager; providers = get_plugin_manager().providers(); "
        "print('llamacpp' in providers, [m for m in sys.modules if m.split('.')[0] in ('llama_cpp', 'numpy', 'gguf')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True []"
