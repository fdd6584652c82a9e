"""tox's inline plugin (tox 4 loads ``toxfile.py`` from the project's root): llama.cpp's build flags.

llama.cpp is compiled for the CPU it is built on. On a CPU with AMX (Intel Sapphire Rapids and
later) two of its paths break: its AMX kernels crash on a Q8_0 model (llama.cpp's issue 20824) and
AVX512-FP16 does an F16 model's arithmetic in half precision (logprobs move ~1e-3 with the batch).
On such a CPU, unless ``CFLAGS`` is set already, every env builds llama-cpp-python without both
(docs/llamacpp.md). ``python3 toxfile.py`` prints the flags, empty where none are needed (.ci/run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

AMX_SAFE = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -mno-avx512fp16"


def llama_cpp_flags() -> str:
    """The compiler flags llama.cpp needs on this CPU: `AMX_SAFE` where Linux reports AMX, else none."""
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        ).split()
    except (OSError, StopIteration):
        return ""
    return AMX_SAFE if "amx_tile" in flags else ""


try:
    from tox.plugin import impl
except ImportError:  # run as a script without tox
    pass
else:

    @impl
    def tox_add_env_config(env_conf: Any, state: Any) -> None:
        flags = llama_cpp_flags()
        if flags and "CFLAGS" not in os.environ and "CXXFLAGS" not in os.environ:
            env_conf["set_env"].update({"CFLAGS": flags, "CXXFLAGS": flags}, override=False)


if __name__ == "__main__":
    print(llama_cpp_flags())
