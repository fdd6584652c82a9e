"""`provender pull org/repo-GGUF:QUANT`: one quantisation of a repo of several, through the stand-in Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakehub import FakeHub
from helpers import run_cli
from provender import CacheManager, ModelNotFoundError
from provender._cache._gguf import quant_of, select_quant, split_tag
from provender_llamacpp import LlamaCppProvider

REPO = "org/tiny-GGUF"


@pytest.fixture
def gguf_repo(fake_hub: FakeHub, tiny_gguf: Path, tiny_q8: Path, tiny_split: list[Path]) -> dict[str, bytes]:
    """A GGUF repo as they come on the Hub: several quantisations, one split in parts, a projector, a README."""
    files = {
        "README.md": b"# tiny GGUF\n",
        "tiny-F32.gguf": tiny_gguf.read_bytes(),
        "tiny-Q8_0.gguf": tiny_q8.read_bytes(),
        "mmproj-tiny-f16.gguf": tiny_q8.read_bytes()[:4096],
        **{f"F16/{p.name}": p.read_bytes() for p in tiny_split},
    }
    fake_hub.add(REPO, files)
    return files


def gguf_downloads(hub: FakeHub) -> list[str]:
    return sorted(d.removeprefix(f"{REPO}/") for d in hub.downloads if d.endswith(".gguf"))


def test_pull_fetches_only_that_quantisation(gguf_repo: dict[str, bytes], fake_hub: FakeHub) -> None:
    cm = CacheManager()
    entry = cm.fetch(f"{REPO}:Q8_0", progress=False, endpoint=fake_hub.endpoint)
    assert entry.name == REPO and entry.kind == "hub"
    assert gguf_downloads(fake_hub) == ["tiny-Q8_0.gguf"]  # not F32, not the F16 parts, not the projector
    assert entry.size == len(gguf_repo["tiny-Q8_0.gguf"])
    assert sorted(p.name for p in entry.model_path.iterdir()) == ["tiny-Q8_0.gguf"]
    # never downloaded twice, whichever name it is asked by
    cm.fetch(f"{REPO}:q8_0", progress=False, endpoint=fake_hub.endpoint)
    cm.fetch(f"{REPO}:Q8_0", progress=False, endpoint=fake_hub.endpoint)
    assert gguf_downloads(fake_hub) == ["tiny-Q8_0.gguf"]


def test_split_quantisation_comes_with_all_its_parts(
    gguf_repo: dict[str, bytes], fake_hub: FakeHub, tiny_split: list[Path]
) -> None:
    cm = CacheManager()
    cm.fetch(f"{REPO}:F16", progress=False, endpoint=fake_hub.endpoint)
    assert gguf_downloads(fake_hub) == [f"F16/{p.name}" for p in tiny_split]
    assert len(tiny_split) == 3


def test_pulled_quantisations_load_and_generate(
    gguf_repo: dict[str, bytes], fake_hub: FakeHub, tiny_split: list[Path]
) -> None:
    from llama_cpp import Llama

    env = {"HF_ENDPOINT": fake_hub.endpoint}
    # not cached: the provider pulls it on first use, that quantisation only
    out = run_cli("generate", "-m", f"llamacpp:{REPO}:F16", "--max-tokens", "20", "Hello", env=env)
    assert out.returncode == 0, out.stderr
    assert gguf_downloads(fake_hub) == [f"F16/{p.name}" for p in tiny_split]
    direct = Llama(str(tiny_split[0]), n_ctx=512, verbose=False)  # llama.cpp finds the other parts itself
    assert out.stdout == direct.create_completion("Hello", max_tokens=20, temperature=0)["choices"][0]["text"] + "\n"
    direct.close()
    q8 = run_cli("generate", "-m", f"{REPO}:Q8_0", "--max-tokens", "5", "Hello", env=env)  # claimed: no provider named
    assert q8.returncode == 0, q8.stderr
    assert gguf_downloads(fake_hub) == sorted(["tiny-Q8_0.gguf", *(f"F16/{p.name}" for p in tiny_split)])
    assert run_cli("generate", "-m", f"{REPO}:Q8_0", "--max-tokens", "5", "Hi", env=env).returncode == 0
    assert fake_hub.downloads.count(f"{REPO}/tiny-Q8_0.gguf") == 1  # a cached quant is not fetched again
    with pytest.raises(ModelNotFoundError, match="name one"):
        LlamaCppProvider(REPO).generate("Hello")  # two quants cached, no Q4_K_M: ambiguous


def test_cli_pull_ls_verify_rm(gguf_repo: dict[str, bytes], fake_hub: FakeHub, cache_dir: Path) -> None:
    env = {"HF_ENDPOINT": fake_hub.endpoint}
    out = run_cli("pull", f"{REPO}:Q8_0", "-q", env=env)
    assert out.returncode == 0, out.stderr
    assert gguf_downloads(fake_hub) == ["tiny-Q8_0.gguf"]
    again = run_cli("pull", f"llamacpp:{REPO}:Q8_0", "-q", env=env)  # with the provider named: same file
    assert again.returncode == 0, again.stderr
    assert gguf_downloads(fake_hub) == ["tiny-Q8_0.gguf"]
    rows = json.loads(run_cli("cache", "ls", "--json").stdout)
    assert [(r["name"], r["gguf_files"]) for r in rows] == [(REPO, ["tiny-Q8_0.gguf"])]
    assert "llamacpp" in rows[0]["providers"]
    table = run_cli("cache", "ls").stdout
    assert "GGUF" in table and "tiny-Q8_0.gguf" in table
    assert run_cli("cache", "pin", REPO).returncode == 0
    assert run_cli("cache", "verify").returncode == 0
    assert run_cli("cache", "unpin", REPO).returncode == 0
    assert run_cli("cache", "rm", "-y", REPO).returncode == 0
    assert json.loads(run_cli("cache", "ls", "--json").stdout) == []


def test_cli_unknown_quantisation_names_the_ones_on_offer(gguf_repo: dict[str, bytes], fake_hub: FakeHub) -> None:
    out = run_cli("pull", f"{REPO}:Q4_K_M", env={"HF_ENDPOINT": fake_hub.endpoint})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "Q4_K_M" in out.stderr and "F16, F32, Q8_0" in out.stderr
    assert fake_hub.downloads == []
    both = run_cli("pull", f"{REPO}:Q8_0", "--include", "*.md", env={"HF_ENDPOINT": fake_hub.endpoint})
    assert both.returncode == 2 and "--include" in both.stderr


def test_offline_pull_of_a_cached_quantisation(gguf_repo: dict[str, bytes], fake_hub: FakeHub) -> None:
    env = {"HF_ENDPOINT": fake_hub.endpoint}
    assert run_cli("pull", f"{REPO}:Q8_0", "-q", env=env).returncode == 0
    offline = run_cli("pull", f"{REPO}:Q8_0", "-q", env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr
    missing = run_cli("pull", f"{REPO}:F32", "-q", env={**env, "HF_HUB_OFFLINE": "1"})
    assert missing.returncode == 1 and "F32" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("org/repo-GGUF:Q4_K_M", ("org/repo-GGUF", "Q4_K_M")),
        ("org/repo-GGUF", ("org/repo-GGUF", None)),
        ("org/repo:iq2_xxs", ("org/repo", "iq2_xxs")),
        ("C:/models/x.gguf", ("C:/models/x.gguf", None)),
    ],
)
def test_split_tag(name: str, expected: tuple[str, str | None]) -> None:
    assert split_tag(name) == expected


def test_select_quant_rules() -> None:
    files = [
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "Llama-3.2-1B-Instruct-Q4_K_S.gguf",
        "Llama-3.2-1B-Instruct.Q8_0.gguf",
        "Q6_K/Llama-3.2-1B-Instruct-Q6_K-00001-of-00002.gguf",
        "Q6_K/Llama-3.2-1B-Instruct-Q6_K-00002-of-00002.gguf",
        "mmproj-Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "README.md",
    ]
    assert select_quant(files, "Q4_K_M") == ["Llama-3.2-1B-Instruct-Q4_K_M.gguf"]
    assert select_quant(files, "q8_0") == ["Llama-3.2-1B-Instruct.Q8_0.gguf"]
    assert select_quant(files, "Q6_K") == files[3:5]
    assert select_quant(files, None) == ["Llama-3.2-1B-Instruct-Q4_K_M.gguf"]  # the default, as llama.cpp's -hf
    assert select_quant(["only-F16.gguf"], None) == ["only-F16.gguf"]
    with pytest.raises(ModelNotFoundError, match="Q4_K_M, Q4_K_S, Q6_K, Q8_0"):
        select_quant(files, "Q4_K")  # a prefix of a tag is not the tag
    assert quant_of("model-UD-IQ2_XXS.gguf") == "IQ2_XXS" and quant_of("model.gguf") is None
