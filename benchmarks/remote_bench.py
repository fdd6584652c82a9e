"""The remote tier against the Hub alone, for a fleet of simulated machines, in one run.

    python benchmarks/remote_bench.py [--size-mb 200] [--runs 5] [--machines 1,2,4] [--quick]

Writes benchmarks/results-remote.json (``--quick``: 20 MB, 3 runs, into benchmarks/.work/)
and prints Markdown tables. Each simulated machine is its own process
(``remote_bench.py --worker``) with its own cache directory, as a node of a fleet would be;
the Hub is the stand-in of the test suite (tests/fakehub.py on 127.0.0.1, which counts its
requests and the file bytes it sends); the tiers are a ``file://`` folder and an S3 bucket
on moto's standalone server (a real S3-compatible HTTP server, started here on 127.0.0.1).

1. **Fleet.** For N machines (1, 2, 4) with no tier, a ``file://`` tier and an S3 tier: the
   bytes and requests the Hub served, and where each machine got the model. Two orders:
   ``staggered`` (one machine pulls, then the other N-1 at once: a fleet whose tier was
   warmed first) and ``at-once`` (all N miss at the same moment).
2. **Second machine.** The time for a machine with an empty cache to get the model from the
   tier once another machine has put it there, against from the stand-in Hub; the sources
   alternate order from run to run and the median of ``--runs`` is reported.

Scratch data goes to benchmarks/.work/remote/ and is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
WORK = HERE / ".work" / "remote"
REPO = "bench/fleet-model"
BUCKET = "provender-bench"


# -- a simulated machine ---------------------------------------------------------------------


def worker(repo: str) -> None:
    """One machine's pull, in its own process: prints one JSON line (where the bytes came from, seconds)."""
    start = time.perf_counter()
    from provender import CacheManager

    cm = CacheManager()
    imports = time.perf_counter()
    # the libraries the pull loads on first use, timed apart: pull_s is the transfer and its checks
    import huggingface_hub.file_download  # noqa: F401

    url = os.environ.get("PROVENDER_REMOTE__URL", "")
    if url.startswith("s3://"):
        import s3fs  # noqa: F401
    elif url:
        import fsspec.implementations.local  # noqa: F401
    ready = time.perf_counter()
    if hasattr(cm, "pull"):  # the remote tier's API
        result = cm.pull(repo, progress=False)
        out: dict[str, Any] = {
            "source": result.source,
            "bytes_from_remote": result.bytes_from_remote,
            "bytes_from_hub": result.bytes_from_hub,
            "pushed": result.pushed,
            "warnings": list(result.warnings),
            "size": result.entry.size,
        }
    else:  # before the tier existed: a Hub download
        entry = cm.fetch(repo, progress=False)
        out = {"source": "hub", "bytes_from_remote": 0, "bytes_from_hub": entry.size, "pushed": False}
        out.update(warnings=[], size=entry.size)
    out["pull_s"] = time.perf_counter() - ready
    out["startup_s"] = imports - start
    out["import_s"] = ready - imports
    print(json.dumps(out), flush=True)


def floor(kind: str, target: str, names: list[str]) -> None:
    """The same bytes read raw, without provender (no hashing, no placing): the server's own floor.

    hub: GET each file from the stand-in Hub; file: read each blob of the tier folder; s3: GET each
    blob object with boto3. Prints one JSON line with the seconds and the bytes read."""
    import urllib.request

    import boto3

    client = boto3.client("s3") if kind == "s3" else None  # the AWS_* variables of the machine's environment
    start = time.perf_counter()  # imports and set-up excluded, as in the machines' pull_s
    total = 0
    if kind == "hub":
        for name in names:
            with urllib.request.urlopen(f"{target}/{REPO}/resolve/main/{name}") as r:
                while chunk := r.read(1 << 20):
                    total += len(chunk)
    elif kind == "file":
        for path in sorted(Path(target.removeprefix("file://")).glob("blobs/sha256/*")):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    total += len(chunk)
    else:
        assert client is not None
        bucket, _, prefix = target.removeprefix("s3://").partition("/")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/blobs/"):
            for obj in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
                while chunk := body.read(1 << 20):
                    total += len(chunk)
    print(json.dumps({"seconds": time.perf_counter() - start, "bytes": total}), flush=True)


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1, in its own process; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto.server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto.server did not answer on {endpoint}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


class Tiers:
    """Fresh, empty tiers on demand (one per scenario), removed afterwards: only what this run created."""

    def __init__(self, s3_endpoint: str | None) -> None:
        self.s3_endpoint = s3_endpoint
        self.s3: Any = None
        if s3_endpoint:
            import boto3

            self.s3 = boto3.client(
                "s3",
                endpoint_url=s3_endpoint,
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
                region_name="us-east-1",
            )
            self.s3.create_bucket(Bucket=BUCKET)

    def env(self, kind: str) -> tuple[dict[str, str], str | None]:
        """(environment of a machine using a new, empty tier of this kind, the tier's URL)."""
        if kind == "none":
            return {}, None
        tag = uuid.uuid4().hex[:8]
        if kind == "file":
            root = WORK / f"tier-{tag}"
            root.mkdir(parents=True)
            url = root.resolve().as_uri()
            return {"PROVENDER_REMOTE__URL": url}, url
        assert self.s3_endpoint
        url = f"s3://{BUCKET}/{tag}"
        return {"PROVENDER_REMOTE__URL": url, "AWS_ENDPOINT_URL": self.s3_endpoint, **S3_ENV}, url

    def drop(self, url: str | None) -> None:
        if url is None:
            return
        if url.startswith("file://"):
            shutil.rmtree(Path(url.removeprefix("file://")), ignore_errors=True)
        else:  # the objects under this run's own prefix
            prefix = url.removeprefix(f"s3://{BUCKET}/") + "/"
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
                for obj in page.get("Contents", []):
                    self.s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


# -- runs --------------------------------------------------------------------------------------


def base_env(hub_endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVENDER_", "HF_", "AWS_"))}
    env.update(
        HF_ENDPOINT=hub_endpoint,
        HF_HOME=str(WORK / "hf-home"),  # no token, no user config
        HF_HUB_DISABLE_TELEMETRY="1",
        XDG_CONFIG_HOME=str(WORK / "xdg-config"),
        PROVENDER_CACHE__MAX_SIZE="100GB",
        PROVENDER_QUIET_PLUGIN_ERRORS="1",
    )
    return env


def start_machine(env: dict[str, str]) -> subprocess.Popen[str]:
    cache = WORK / f"machine-{uuid.uuid4().hex[:8]}"
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", REPO],
        env={**env, "PROVENDER_CACHE__DIR": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"a machine failed (exit {proc.returncode}): {err.strip()[-2000:]}")
    row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return row


def machines(env: dict[str, str], n: int) -> list[dict[str, Any]]:
    """n machines pulling at the same moment; their reports."""
    procs = [start_machine(env) for _ in range(n)]
    return [finish(p) for p in procs]


def clean_machines() -> None:
    for path in WORK.glob("machine-*"):
        shutil.rmtree(path, ignore_errors=True)


def fleet(hub: Any, tiers: Tiers, env: dict[str, str], kinds: list[str], sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for order in ("staggered", "at-once"):
        for kind in kinds:
            for n in sizes:
                if order == "at-once" and n == 1:
                    continue  # the same as staggered
                tier_env, url = tiers.env(kind)
                requests0, bytes0, files0 = hub.requests, hub.bytes_sent, len(hub.downloads)
                start = time.perf_counter()
                menv = {**env, **tier_env}
                reports = machines(menv, 1) + machines(menv, n - 1) if order == "staggered" else machines(menv, n)
                wall = time.perf_counter() - start
                row = {
                    "order": order,
                    "tier": kind,
                    "machines": n,
                    "hub_bytes": hub.bytes_sent - bytes0,
                    "hub_requests": hub.requests - requests0,
                    "hub_file_downloads": len(hub.downloads) - files0,
                    "sources": [r["source"] for r in reports],
                    "bytes_from_remote": sum(r["bytes_from_remote"] for r in reports),
                    "warnings": sorted({w for r in reports for w in r["warnings"]}),
                    "wall_s": wall,
                    "load_average_1m": os.getloadavg()[0],
                }
                rows.append(row)
                print(
                    f"fleet {order:9} tier={kind:4} N={n}: Hub {row['hub_bytes'] / 1e6:8.1f} MB in "
                    f"{row['hub_requests']:3} requests; sources {','.join(row['sources'])}; {wall:.1f} s",
                    flush=True,
                )
                tiers.drop(url)
                clean_machines()
    return rows


def second_machine(hub: Any, tiers: Tiers, env: dict[str, str], kinds: list[str], runs: int) -> dict[str, Any]:
    """A fresh machine getting the model from each tier (filled once by a first machine) and from the Hub."""
    urls: dict[str, str | None] = {}
    envs: dict[str, dict[str, str]] = {"hub": env}
    for kind in kinds:
        tier_env, urls[kind] = tiers.env(kind)
        envs[kind] = {**env, **tier_env}
        first = finish(start_machine(envs[kind]))  # fills the tier
        assert first["source"] == "hub", first
    clean_machines()
    sources = [*kinds, "hub"]
    out: dict[str, Any] = {
        s: {"runs": [], "import_runs": [], "startup_runs": [], "raw_runs": [], "hub_requests": 0} for s in sources
    }
    targets = {**urls, "hub": hub.endpoint}
    for r in range(runs):
        order = sources if r % 2 == 0 else sources[::-1]
        for source in order:
            requests0 = hub.requests
            report = finish(start_machine(envs[source]))
            expected = "hub" if source == "hub" else "remote"
            if report["source"] != expected:
                raise RuntimeError(f"run {r}: a machine using {source} got the model from {report['source']}")
            out[source]["runs"].append(report["pull_s"])
            out[source]["startup_runs"].append(report["startup_s"])
            out[source]["import_runs"].append(report["import_s"])
            out[source]["hub_requests"] += hub.requests - requests0
            clean_machines()
            raw = subprocess.run(
                [sys.executable, __file__, "--floor", source, str(targets[source]), *hub.repos[REPO][1]],
                env=envs[source],
                capture_output=True,
                text=True,
                check=True,
            )
            out[source]["raw_runs"].append(json.loads(raw.stdout)["seconds"])
    for source in sources:
        out[source]["median_s"] = statistics.median(out[source]["runs"])
        out[source]["raw_median_s"] = statistics.median(out[source]["raw_runs"])
        out[source]["import_median_s"] = statistics.median(out[source]["import_runs"])
    for kind in kinds:
        out[kind]["ratio_hub_over_tier"] = out["hub"]["median_s"] / out[kind]["median_s"]
        tiers.drop(urls[kind])
    out["load_average_1m"] = os.getloadavg()[0]
    for source in sources:
        print(
            f"second machine from {source:4}: median {out[source]['median_s']:.2f} s "
            f"(runs {', '.join(f'{t:.2f}' for t in out[source]['runs'])}); the same bytes read raw "
            f"{out[source]['raw_median_s']:.3f} s; Hub requests {out[source]['hub_requests']}",
            flush=True,
        )
    return out


def publish(hub: Any, size: int) -> dict[str, Any]:
    """A model of `size` bytes: two safetensors shards (LFS files) and small git files, random content."""
    half = size // 2
    files = {
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 512}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"vocab": {}}}).encode(),
        "model-00001-of-00002.safetensors": os.urandom(half),
        "model-00002-of-00002.safetensors": os.urandom(size - half),
    }
    hub.add(REPO, files)
    return {
        "repo": REPO,
        "files": len(files),
        "bytes": sum(len(v) for v in files.values()),
        "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in files.items() if k.endswith(".safetensors")},
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| order | tier | N | Hub bytes | Hub requests | sources |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["fleet"]:
        lines.append(
            f"| {row['order']} | {row['tier']} | {row['machines']} | {row['hub_bytes'] / 1e6:.1f} MB "
            f"| {row['hub_requests']} | {', '.join(row['sources'])} |"
        )
    second = results.get("second_machine")
    if second:
        lines += [
            "",
            "| second machine from | median pull | runs | raw read, same bytes | imports | Hub requests |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for source in [k for k in second if isinstance(second[k], dict)]:
            s = second[source]
            runs = ", ".join(f"{t:.2f}" for t in s["runs"])
            raw = f"{s['raw_median_s']:.3f} s"
            imports = f"{s['import_median_s']:.2f} s"
            lines.append(f"| {source} | {s['median_s']:.2f} s | {runs} | {raw} | {imports} | {s['hub_requests']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", metavar="REPO", help=argparse.SUPPRESS)
    parser.add_argument("--floor", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--size-mb", type=int, default=200, help="model size (default 200 MB)")
    parser.add_argument("--runs", type=int, default=5, help="runs of the second-machine timing (median)")
    parser.add_argument("--machines", default="1,2,4", help="fleet sizes (default 1,2,4)")
    parser.add_argument("--tiers", default="file,s3", help="tiers to measure (file, s3)")
    parser.add_argument("--quick", action="store_true", help="20 MB, 3 runs: a smoke run")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.floor:
        floor(args.floor[0], args.floor[1], args.floor[2:])
        return
    sys.path.insert(0, str(HERE.parent / "tests"))
    from fakehub import FakeHub

    size = (20 if args.quick else args.size_mb) * 1_000_000
    runs = 3 if args.quick else args.runs
    sizes = [int(n) for n in args.machines.split(",")]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    has_tier = (HERE.parent / "packages/core/src/provender/_cache/_remote.py").exists()
    kinds = [k for k in args.tiers.split(",") if k] if has_tier else []
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_1m_start": os.getloadavg()[0],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    hub = FakeHub()
    try:
        results["model"] = publish(hub, size)
        env = base_env(hub.endpoint)
        with moto_server() if "s3" in kinds else contextlib.nullcontext(None) as endpoint:
            tiers = Tiers(endpoint)
            results["fleet"] = fleet(hub, tiers, env, ["none", *kinds], sizes)
            if kinds:
                results["second_machine"] = second_machine(hub, tiers, env, kinds, runs)
    finally:
        hub.close()
        shutil.rmtree(WORK, ignore_errors=True)
    results["load_average_1m_end"] = os.getloadavg()[0]
    out = HERE / (".work/results-remote-quick.json" if args.quick else "results-remote.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + table(results))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
