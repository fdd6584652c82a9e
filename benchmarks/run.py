"""provender against the tools users would pick instead, side by side in one run.

    tox -e bench                    # everything (about 2 minutes, 3 GB of scratch disk)
    tox -e bench -- --quick         # smaller trees and files, for a smoke run
    tox -e bench -- --only mlx      # one group: core (cache, CLI) or mlx (provider-mlx)
    python benchmarks/run.py --only core --against /path/to/old-env/bin/python
                                    # the core figures also measured for another install of
                                    # provender (an older commit in its own venv), interleaved

Writes benchmarks/results.json and prints a Markdown table of ratios (the figures
in benchmarks/README.md come from it). Scratch data goes to benchmarks/.work/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent
WORK = HERE / ".work"


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_hub_tree(hub: Path, n: int) -> None:
    """n repos in huggingface_hub's layout: two files each, one of them an LFS blob."""
    hub.mkdir(parents=True)
    for i in range(n):
        repo = hub / f"models--bench--model-{i:05d}"
        commit = hashlib.sha1(str(i).encode()).hexdigest()
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        (repo / "blobs").mkdir()
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True)
        for name, data in (("config.json", b'{"model_type": "llama"}'), ("model.safetensors", os.urandom(256))):
            blob = hashlib.sha256(data + str(i).encode()).hexdigest()
            (repo / "blobs" / blob).write_bytes(data)
            (snap / name).symlink_to(f"../../blobs/{blob}")


def bench_ls(sizes: list[int], results: dict[str, object]) -> None:
    from huggingface_hub import scan_cache_dir

    from provender import CacheManager

    for n in sizes:
        root = WORK / f"ls-{n}"
        shutil.rmtree(root, ignore_errors=True)
        make_hub_tree(root / "hub", n)
        start = time.perf_counter()
        cm = CacheManager(root, max_size=10**15)
        assert len(cm.entries()) == n
        cold = time.perf_counter() - start  # first listing: discovers and indexes every repo
        warm = median_time(lambda cm=cm: cm.entries(), 5)
        scan = median_time(lambda root=root: scan_cache_dir(root / "hub"), 3)
        env = child_env(PROVENDER_CACHE__DIR=str(root), PROVENDER_CACHE__MAX_SIZE="1PB")
        cli = median_time(
            lambda env=env: subprocess.run(
                [sys.executable, "-m", "provender", "cache", "ls", "--json"],
                env=env,
                stdout=subprocess.DEVNULL,
                check=True,
            ),
            3,
        )
        code = f"from huggingface_hub import scan_cache_dir; scan_cache_dir({str(root / 'hub')!r})"
        scan_cli = median_time(lambda code=code: subprocess.run([sys.executable, "-c", code], check=True), 3)
        results[f"ls_{n}"] = {
            "repos": n,
            "provender_entries_s": warm,
            "provender_first_listing_s": cold,
            "scan_cache_dir_s": scan,
            "ratio_scan_over_provender": scan / warm,
            "cli_cache_ls_json_s": cli,
            "cli_scan_cache_dir_s": scan_cli,
            "ratio_cli": scan_cli / cli,
        }
        print(
            f"ls {n}: provender {warm * 1000:.1f} ms (first {cold * 1000:.0f} ms), scan_cache_dir "
            f"{scan * 1000:.1f} ms; CLI {cli * 1000:.0f} ms vs {scan_cli * 1000:.0f} ms",
            flush=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def bench_hit(results: dict[str, object], calls: int) -> None:
    import diskcache
    from huggingface_hub import try_to_load_from_cache

    from provender import CacheManager

    root = WORK / "hit"
    shutil.rmtree(root, ignore_errors=True)
    make_hub_tree(root / "hub", 10)
    cm = CacheManager(root, max_size=10**15)
    key = cm.hub_key("bench/model-00003")
    assert cm.get_cached_model(key) is not None
    dc = diskcache.Cache(str(root / "diskcache"))
    dc.set(key, str(root / "x"))

    def per_call(fn: Callable[[], object]) -> float:
        fn()
        return median_time(lambda: [fn() for _ in range(calls)], 5) / calls

    ours = per_call(lambda: cm.get_cached_model(key))
    hf = per_call(lambda: try_to_load_from_cache("bench/model-00003", "config.json", cache_dir=root / "hub"))
    dcache = per_call(lambda: dc.get(key))
    results["hit"] = {
        "provender_get_cached_model_us": ours * 1e6,
        "hf_try_to_load_from_cache_us": hf * 1e6,
        "diskcache_get_us": dcache * 1e6,
        "ratio_vs_hf": ours / hf,
        "ratio_vs_diskcache": ours / dcache,
    }
    print(
        f"hit: provender {ours * 1e6:.1f} us, try_to_load_from_cache {hf * 1e6:.1f} us, "
        f"diskcache {dcache * 1e6:.1f} us",
        flush=True,
    )
    dc.close()
    shutil.rmtree(root, ignore_errors=True)


def bench_import(results: dict[str, object], size: int) -> None:
    from provender import CacheManager

    root = WORK / "import"
    shutil.rmtree(root, ignore_errors=True)
    src = root / "model"
    src.mkdir(parents=True)
    block = os.urandom(1 << 20)
    with open(src / "model.safetensors", "wb") as f:
        for _ in range(size >> 20):
            f.write(block)
    os.sync()
    cm = CacheManager(root / "cache", max_size=10**15)
    start = time.perf_counter()
    zero = cm.import_model(src, "bench/zero-copy")
    zero_s = time.perf_counter() - start
    start = time.perf_counter()
    cm.import_model(src, "bench/copy", link_mode="copy")
    copy_s = time.perf_counter() - start
    start = time.perf_counter()
    shutil.copytree(src, root / "plain-copy")
    plain_s = time.perf_counter() - start
    how = (
        "hard link"
        if (zero.model_path / "model.safetensors").stat().st_ino == (src / "model.safetensors").stat().st_ino
        else "clone or copy"
    )
    results["import"] = {
        "bytes": size,
        "zero_copy_s": zero_s,
        "byte_copy_s": copy_s,
        "shutil_copytree_s": plain_s,
        "ratio_copy_over_zero": copy_s / zero_s,
        "zero_copy_method": how,
    }
    print(
        f"import {size >> 20} MiB: zero-copy ({how}) {zero_s * 1000:.1f} ms, byte copy {copy_s * 1000:.0f} ms, "
        f"shutil.copytree {plain_s * 1000:.0f} ms",
        flush=True,
    )
    shutil.rmtree(root, ignore_errors=True)


SIMPLE_PLUGIN = '''"""A plugin in the simplest style the docs show: one module, Provider subclassed at import."""
from provender import Provider, hookimpl


class ShoutProvider(Provider):
    name = "shout"

    def generate(self, prompt, **options):
        return prompt.upper()


@hookimpl
def provender_register_providers(register):
    register("shout", ShoutProvider)
'''

# A third-party plugin written as pluggy's docs show: its own marker made at module level
# (issue 20 item 3; the plugin above uses provender.hookimpl).
PLUGGY_PLUGIN = '''"""A plugin written as pluggy's docs show: ``pluggy.HookimplMarker`` at module level."""
import pluggy

from provender import Provider

hookimpl = pluggy.HookimplMarker("provender")


class LoudProvider(Provider):
    name = "loud"

    def generate(self, prompt, **options):
        return prompt.upper() + "!"


@hookimpl
def provender_register_providers(register):
    register("loud", LoudProvider)
'''


def make_user_site(root: Path, n_dists: int = 100, style: str = "simple") -> Path:
    """A sys.path folder as a real user's environment has one: `n_dists` installed distributions
    (a third with console scripts) and one provender plugin, written in the simplest style
    (`style` "simple": ``provender.hookimpl``) or as pluggy's docs show ("pluggy")."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for i in range(n_dists):
        info = root / f"fakedist{i:03d}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakedist{i:03d}\nVersion: 1.0\n")
        if i % 3 == 0:
            (info / "entry_points.txt").write_text(f"[console_scripts]\nfake{i} = fake{i}:main\n")
    name = "shout" if style == "simple" else "loud"
    (root / f"provender_{name}.py").write_text(SIMPLE_PLUGIN if style == "simple" else PLUGGY_PLUGIN)
    info = root / f"provender_{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: provender-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[provender]\n{name} = provender_{name}\n")
    return root


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `cmd` once: wall-clock seconds, and CPU seconds (user + system) of the process, the
    steadier figure when other jobs share the cores."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    wall = time.perf_counter() - start
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (now.ru_utime + now.ru_stime) - (used.ru_utime + used.ru_stime)


def interleaved(cmds: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each command, run in turn `runs` times (one untimed run first),
    so that a change of load during the measurement falls on all of them alike."""
    for cmd, env in cmds.values():
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    for _ in range(runs):
        for name, (cmd, env) in cmds.items():
            samples[name].append(timed(cmd, env))
    return {
        name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s)) for name, s in samples.items()
    }


def bench_help(results: dict[str, object], runs: int) -> None:
    provender = shutil.which("provender", path=str(Path(sys.executable).parent)) or "provender"
    env = child_env()
    user = child_env(PYTHONPATH=str(make_user_site(WORK / "user-site")))
    # The same with a plugin written the simplest way (it imports provender.Provider at module
    # level) among 100 more installed distributions, as a real user's environment looks.
    check = subprocess.run([provender, "plugins", "--json"], capture_output=True, text=True, env=user)
    assert '"shout"' in check.stdout and '"loaded"' in check.stdout, check.stdout + check.stderr
    # and one written as pluggy's docs show (its own HookimplMarker at module level), likewise
    loud = child_env(PYTHONPATH=str(make_user_site(WORK / "user-site-pluggy", style="pluggy")))
    check = subprocess.run([provender, "plugins", "--json"], capture_output=True, text=True, env=loud)
    status = {p["name"]: p["status"] for p in json.loads(check.stdout)}
    assert status.get("loud") == "loaded", check.stdout + check.stderr
    med = interleaved(
        {
            "help": ([provender, "--help"], env),
            "click": ([sys.executable, "-c", "import click"], env),
            "bare": ([sys.executable, "-c", "pass"], env),
            "help_user": ([provender, "--help"], user),
            "click_user": ([sys.executable, "-c", "import click"], user),
            "help_pluggy": ([provender, "--help"], loud),
            "click_pluggy": ([sys.executable, "-c", "import click"], loud),
        },
        runs,
    )
    (ours, ours_cpu), (click, click_cpu) = med["help"], med["click"]
    results["help"] = {
        "provender_help_s": ours,
        "import_click_s": click,
        "python_startup_s": med["bare"][0],
        "ratio": ours / click,
        "provender_help_cpu_s": ours_cpu,
        "import_click_cpu_s": click_cpu,
        "ratio_cpu": ours_cpu / click_cpu,
    }
    print(
        f"--help: {ours * 1000:.0f} ms, import click {click * 1000:.0f} ms ({ours / click:.2f}x; CPU "
        f"{ours_cpu / click_cpu:.2f}x), python {med['bare'][0] * 1000:.0f} ms",
        flush=True,
    )
    rows = [
        ("help_simple_plugin_100_dists", "help_user", "click_user", "a simple-style plugin"),
        ("help_pluggy_style_plugin_100_dists", "help_pluggy", "click_pluggy", "a plugin written as pluggy's docs show"),
    ]
    for name, ours_key, click_key, what in rows:
        (ours, ours_cpu), (click, click_cpu) = med[ours_key], med[click_key]
        results[name] = {
            "provender_help_s": ours,
            "import_click_s": click,
            "ratio": ours / click,
            "provender_help_cpu_s": ours_cpu,
            "import_click_cpu_s": click_cpu,
            "ratio_cpu": ours_cpu / click_cpu,
        }
        print(
            f"--help with {what} and 100 more distributions: {ours * 1000:.0f} ms, "
            f"import click {click * 1000:.0f} ms ({ours / click:.2f}x; CPU {ours_cpu / click_cpu:.2f}x)",
            flush=True,
        )


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measured process: as a user's, with bytecode caches written and read.

    With PYTHONDONTWRITEBYTECODE set (tox's test env, some shells) an editable install is
    compiled from source at every start while click is read from its installed .pyc files:
    that measures the compiler, not provender. Every command is also run once untimed first.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **extra}


HIT_CHILD = """
import json, os, statistics, sys, time
from pathlib import Path
root, calls = Path(sys.argv[1]), int(sys.argv[2])
from provender import CacheManager
cm = CacheManager(root, max_size=10**15)
name = "bench/model-00003"
key = cm.hub_key(name)
assert cm.get_cached_model(key) is not None
def per_call(fn):
    fn()
    wall, cpu = [], []
    for _ in range(5):
        w, c = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        wall.append((time.perf_counter() - w) / calls)
        cpu.append((time.process_time() - c) / calls)
    return {"wall_us": statistics.median(wall) * 1e6, "cpu_us": statistics.median(cpu) * 1e6}
def acquire():
    cm.acquire(name).release()
print(json.dumps({"get_cached_model": per_call(lambda: cm.get_cached_model(key)),
                  "find": per_call(lambda: cm.find(name)), "acquire": per_call(acquire)}))
"""


def _medians(samples: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {op: {k: statistics.median(s[op][k] for s in samples) for k in samples[0][op]} for op in samples[0]}


def _script(python: str, name: str) -> str:
    return shutil.which(name, path=str(Path(python).parent)) or name


def _plugin_names(python: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [_script(python, "provender"), "plugins", "--json"], capture_output=True, text=True, env=env, check=True
    )
    return [p["name"] for p in json.loads(out.stdout)]


def bench_against(results: dict[str, object], other: str, rounds: int, runs: int, calls: int, repos: int) -> None:
    """The core figures for this install and for `other` (another provender install's python), interleaved.

    Each side runs in its own process with its own copy of the data (their index formats may
    differ); the order alternates every round, and medians are reported. `--help` and
    `cache ls` are measured twice: with every plugin each env has, and with this env limited
    to the plugins the other env has (``PROVENDER_PLUGINS__DISABLED``), so both load the same set.
    """
    sides = {"this": sys.executable, "other": other}
    out: dict[str, object] = {"other_python": other, "rounds": rounds}
    base = child_env()
    ours_plugins, their_plugins = _plugin_names(sys.executable, base), _plugin_names(other, base)
    extra = sorted(set(ours_plugins) - set(their_plugins))
    same = {"this": child_env(PROVENDER_PLUGINS__DISABLED=",".join(extra)), "other": base}
    out["plugins"] = {"this": ours_plugins, "other": their_plugins, "disabled_for_same_set": extra}
    tree = WORK / "against-hub"
    shutil.rmtree(tree, ignore_errors=True)
    make_hub_tree(tree / "hub", 10)
    big = WORK / f"against-ls-{repos}"
    shutil.rmtree(big, ignore_errors=True)
    make_hub_tree(big / "hub", repos)
    roots = {side: WORK / f"against-{side}" for side in sides}
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(tree, root / "hit", symlinks=True)
        shutil.copytree(big, root / "ls", symlinks=True)
    shutil.rmtree(tree, ignore_errors=True)
    shutil.rmtree(big, ignore_errors=True)
    user = str(make_user_site(WORK / "user-site"))

    def commands(side: str) -> dict[str, tuple[list[str], dict[str, str]]]:
        py, root = sides[side], roots[side]
        ls_env = {"PROVENDER_CACHE__DIR": str(root / "ls"), "PROVENDER_CACHE__MAX_SIZE": "1PB"}
        prov = _script(py, "provender")
        return {
            "import_click": ([py, "-c", "import click"], base),
            "help": ([prov, "--help"], base),
            "help_same_plugins": ([prov, "--help"], same[side]),
            "help_simple_plugin_100_dists": ([prov, "--help"], {**base, "PYTHONPATH": user}),
            "import_click_100_dists": ([py, "-c", "import click"], {**base, "PYTHONPATH": user}),
            "cache_ls_json": ([prov, "cache", "ls", "--json"], {**base, **ls_env}),
            "cache_ls_json_same_plugins": ([prov, "cache", "ls", "--json"], {**same[side], **ls_env}),
        }

    cmds = {side: commands(side) for side in sides}
    for side in sides:  # untimed: bytecode written, the ls trees indexed
        for cmd, env in cmds[side].values():
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    times: dict[str, dict[str, list[float]]] = {side: {k: [] for k in cmds[side]} for side in sides}
    cpu: dict[str, dict[str, list[float]]] = {side: {k: [] for k in cmds[side]} for side in sides}
    hits: dict[str, list[dict[str, dict[str, float]]]] = {side: [] for side in sides}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for what in cmds["this"]:
            for _ in range(max(1, runs // rounds)):
                for side in order:
                    wall, used = timed(*cmds[side][what])
                    times[side][what].append(wall)
                    cpu[side][what].append(used)
        for side in order:
            proc = subprocess.run(
                [sides[side], "-c", HIT_CHILD, str(roots[side] / "hit"), str(calls)],
                capture_output=True,
                text=True,
                env=base,
                check=True,
            )
            hits[side].append(json.loads(proc.stdout))
    for side in sides:
        med = {what: statistics.median(v) for what, v in times[side].items()}
        med.update({f"{what}_cpu": statistics.median(v) for what, v in cpu[side].items()})
        med["help_ratio"] = med["help"] / med["import_click"]
        med["help_simple_plugin_100_dists_ratio"] = med["help_simple_plugin_100_dists"] / med["import_click_100_dists"]
        med["help_ratio_cpu"] = med["help_cpu"] / med["import_click_cpu"]
        med["help_simple_plugin_100_dists_ratio_cpu"] = (
            med["help_simple_plugin_100_dists_cpu"] / med["import_click_100_dists_cpu"]
        )
        out[side] = {**med, "hit": _medians(hits[side]), "hit_rounds": hits[side]}
    this, them = out["this"], out["other"]
    assert isinstance(this, dict) and isinstance(them, dict)
    rows = [(what, this[what] * 1000, them[what] * 1000, "ms") for what in times["this"]]
    rows += [(f"{what} cpu", this[f"{what}_cpu"] * 1000, them[f"{what}_cpu"] * 1000, "ms") for what in times["this"]]
    rows += [
        (f"hit {op} {k[:-3]}", this["hit"][op][k], them["hit"][op][k], "us")
        for op in this["hit"]
        for k in ("wall_us", "cpu_us")
    ]
    out["this_over_other"] = {what: a / b for what, a, b, _ in rows}
    results["against"] = out
    print(f"\nthis install against {other} ({rounds} rounds, medians; this / other):", flush=True)
    for what, a, b, unit in rows:
        print(f"  {what:30s} {a:9.1f} {unit} vs {b:9.1f} {unit}  {a / b:.3f}", flush=True)
    for unit in ("", "_cpu"):
        print(
            f"  --help / import click{' (CPU)' if unit else ''}: {this['help_ratio' + unit]:.2f} vs "
            f"{them['help_ratio' + unit]:.2f}; with a simple plugin and 100 more distributions: "
            f"{this['help_simple_plugin_100_dists_ratio' + unit]:.2f} vs "
            f"{them['help_simple_plugin_100_dists_ratio' + unit]:.2f}",
            flush=True,
        )
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only", choices=["core", "mlx", "against"], help="run one group only (against: only the --against comparison)"
    )
    parser.add_argument(
        "--against", metavar="PYTHON", help="also measure the core figures with this python's provender, interleaved"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the --against comparison (default 3)")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    results: dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "load_average_at_start": os.getloadavg(),  # 1, 5, 15 minutes: other jobs on the machine skew every figure
    }
    if args.only == "against" and not args.against:
        parser.error("--only against needs --against PYTHON")
    if args.only in (None, "core"):
        bench_help(results, 5 if args.quick else 21)
        bench_hit(results, 200 if args.quick else 2000)
        bench_import(results, (64 if args.quick else 1024) << 20)
        bench_ls([100, 1000] if args.quick else [1000, 10000], results)
    if args.only in (None, "core", "against") and args.against:
        calls = 200 if args.quick else 2000
        bench_against(results, args.against, args.rounds, 6 if args.quick else 21, calls, 100 if args.quick else 1000)
    if args.only in (None, "mlx"):
        sys.path.insert(0, str(HERE))
        import mlx_bench

        results["mlx"] = mlx_bench.main()
    results["load_average_at_end"] = os.getloadavg()
    name = "results-against.json" if args.only == "against" else "results.json"
    out = HERE / ("results-quick.json" if args.quick else name)
    if args.only in ("core", "mlx") and out.exists():  # one group: the other group's figures stay
        results = {**json.loads(out.read_text()), **results}
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
