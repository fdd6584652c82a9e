"""A truncated GGUF in a real `provender serve` on the real llama.cpp (issue 19 item 3).

With ``--max-models 1``, a request for a good model and then one for a GGUF cut short: the
failed load must leave no slot and no lease and evict nothing (`/api/ps` still shows the good
one, in the server and in the pool), and `cache rm` of the broken one must work.
tests/serve/test_loads.py does the same with MLX models in the default tests env.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("provender_serve", reason="install packages/serve (tox -e llamacpp does)")
from helpers import run_cli
from serve.conftest import start_server  # noqa: F401  (the real server fixture, shared)

USER = [{"role": "user", "content": "hello"}]


def _chat(model: str) -> bytes:
    return json.dumps({"model": model, "messages": USER, "max_tokens": 2}).encode()


@pytest.mark.parametrize("which", ["file", "split"])
def test_a_truncated_gguf_leaves_no_slot_no_lease_and_evicts_nothing(
    start_server: Any,  # noqa: F811
    tiny_gguf: Path,
    tiny_split: list[Path],
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    from provender import CacheManager

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    cm = CacheManager()
    cm.import_model(tiny_gguf, "test/good-gguf")
    broken = tmp_path / "broken"
    broken.mkdir()
    if which == "file":
        cut = broken / "tiny.gguf"
        shutil.copy(tiny_gguf, cut)
    else:
        for part in tiny_split:
            shutil.copy(part, broken / part.name)
        cut = broken / tiny_split[-1].name  # the last part of three, cut short
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size - 4096])
    cm.import_model(broken, "test/broken-gguf")

    server = start_server("--max-models", "1")
    status, answer = server.raw("POST", "/v1/chat/completions", _chat("test/good-gguf"))
    assert status == 200, answer
    status, answer = server.raw("POST", "/v1/chat/completions", _chat("test/broken-gguf"))
    assert status == 404 and answer["error"]["code"] == "model_not_found", answer
    assert f"{cut.name} is incomplete: tensor" in answer["error"]["message"]
    status, ps = server.raw("GET", "/api/ps")
    assert status == 200, ps
    assert [r["model"] for r in ps["models"]] == ["test/good-gguf"]
    assert [r["key"] for r in ps["pool"]] == ["llamacpp:test/good-gguf"]  # never unloaded for the broken one
    assert not CacheManager().in_use("test/broken-gguf")
    table = run_cli("ps", env=server.env)
    assert table.returncode == 0 and "test/good-gguf" in table.stdout and "broken" not in table.stdout
    assert server.raw("POST", "/v1/chat/completions", _chat("test/good-gguf"))[0] == 200
    out = run_cli("cache", "rm", "test/broken-gguf", "-y", env=server.env)
    assert out.returncode == 0 and "running process" not in out.stderr, out.stderr
