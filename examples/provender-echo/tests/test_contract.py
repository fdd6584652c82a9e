"""The example plugin runs provender's contract suite against its provider."""

from __future__ import annotations

from provender.testing import ProviderContract


class TestEchoProvider(ProviderContract):
    provider_name = "echo"
    model = "upper"
    capabilities = {"generate", "stream", "chat"}
