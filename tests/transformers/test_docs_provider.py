"""The complete provider of docs/plugins.md ("A complete provider"), run as written against a real model."""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

from provender import CacheManager, Provider, UnsupportedError, model_pool
from provender.testing import ProviderContract

DOCS = Path(__file__).parent.parent.parent / "docs" / "plugins.md"


def _docs_module() -> ModuleType:
    """The section's code block, imported as the module it says it is."""
    section = DOCS.read_text().split("## A complete provider", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/plugins.md: no code block under 'A complete provider'"
    path = Path(tempfile.mkdtemp(prefix="provender-docs-")) / "provender_hf_provider.py"
    path.write_text(code.group(1))
    spec = importlib.util.spec_from_file_location("provender_hf_provider", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


HF = _docs_module()


def test_the_docs_provider_is_about_a_hundred_lines() -> None:
    lines = Path(HF.__file__ or "").read_text().splitlines()
    assert len(lines) <= 110, len(lines)


class TestDocsProviderContract(ProviderContract):
    provider_name = "hf"
    model = ""  # the tiny llama's directory
    capabilities = {"generate", "stream", "chat"}

    @pytest.fixture(autouse=True)
    def _model(self, tiny_llama: Path) -> None:
        type(self).model = str(tiny_llama)

    def make_provider(self) -> Provider:
        provider: Provider = HF.HFProvider(self.model)
        return provider


def test_the_docs_provider_holds_its_cache_entry_while_loaded(cached_tiny: str) -> None:
    provider = HF.HFProvider(cached_tiny)
    out = provider.chat([{"role": "user", "content": "Hello"}], max_tokens=5)
    assert isinstance(out, str)
    assert provider.key in model_pool() and CacheManager().in_use(cached_tiny)  # loaded, and its files leased
    assert provider.generate("Hello", max_tokens=5, system_prompt="Be brief.")
    with pytest.raises(UnsupportedError, match="option 'bogus'"):
        provider.generate("Hello", bogus=1)
    provider.unload()
    assert provider.key not in model_pool() and not CacheManager().in_use(cached_tiny)
