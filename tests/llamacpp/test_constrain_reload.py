"""A constraint compiled for one `Llama` is never used with another: llguidance's tokenizer for a
GGUF points into the Llama's native vocabulary, which is freed with it, and a reload of the same
file (the pool unloading and loading it again: keep-alive, max_models) reused the cached one and
crashed the process. Run in a child process, so a crash is a failed test, not a dead suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llguidance")

CHILD = """
import gc, sys
from llama_cpp import Llama
from provender._constrain import compile_constraint, tokenizer_info
from provender.generation import Constraint

constraint = Constraint.choice(["yes", "no"])
path = sys.argv[1]
seen = []
for _ in range(3):  # load, compile, use, close; the same file again
    llm = Llama(path, n_ctx=64, verbose=False)
    info = tokenizer_info(llm)
    matcher = compile_constraint(constraint, info).matcher()
    seen.append((info.fingerprint, int(matcher.allowed().sum())))
    llm.close()
    del llm, info, matcher
    gc.collect()
fingerprints = [f for f, _ in seen]
assert len(set(fingerprints)) == 3, fingerprints  # one per Llama, never shared
assert len({n for _, n in seen}) == 1 and seen[0][1] > 0, seen  # the same mask each time
print("ok")
"""


def test_a_reloaded_gguf_never_reuses_a_constraint_compiled_for_the_closed_one(tmp_path: Path) -> None:
    from provender_llamacpp.testing import build_tiny_llama

    gguf = build_tiny_llama(tmp_path / "tiny.gguf")
    out = subprocess.run([sys.executable, "-c", CHILD, str(gguf)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), (out.returncode, out.stderr[-2000:])
