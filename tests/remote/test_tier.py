"""The remote tier end to end: two cache folders in two processes stand for two machines sharing a tier
(a real S3-compatible server, moto's, on 127.0.0.1; or a ``file://`` folder), and the stand-in Hub
counts every request it answers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fakehub import FakeHub
from provender import CacheManager, RemoteTier
from provender.errors import ConfigError, ModelNotFoundError, RemoteNotConfiguredError, RemoteTierError

MACHINE = r"""
import json, sys, warnings
from provender import CacheManager
cm = CacheManager()
op, name = sys.argv[1], sys.argv[2]
if op == "pull":
    patterns = sys.argv[3:] or None
    out = cm.pull(name, progress=False, allow_patterns=patterns).to_dict()
elif op == "import":
    out = {"key": cm.import_model(sys.argv[3], name).key}
elif op == "push":
    out = cm.push(name).to_dict()
elif op == "generate":  # pull, generate; and generate from the model's own folder (argv[3]) to compare
    from provender import get_provider
    result = cm.pull(name, progress=False)
    options = {"max_tokens": 4, "temperature": 0.0}
    text = get_provider("mlx:" + name).generate("hello", **options)
    expected = get_provider("mlx:" + sys.argv[3]).generate("hello", **options)
    out = {**result.to_dict(), "text": text, "expected": expected}
out["stats"] = cm.stats().to_dict()
print("RESULT " + json.dumps(out))
"""


def machine(
    op: str, name: str, *args: str, env: dict[str, str], timeout: float = 90, check: bool = True
) -> dict[str, Any]:
    """Run one operation of the cache API on one "machine" (a process with its own env and cache)."""
    proc = subprocess.run(
        [sys.executable, "-c", MACHINE, op, name, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not check:
        return {"rc": proc.returncode, "stderr": proc.stderr, **(json.loads(lines[-1][7:]) if lines else {})}
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return {"stderr": proc.stderr, **json.loads(lines[-1][7:])}


def repo_files(seed: int = 0, big: int = 200_000) -> dict[str, bytes]:
    rnd = hashlib.sha256(str(seed).encode()).digest()
    return {
        "config.json": json.dumps({"model_type": "test", "seed": seed}).encode(),
        "model.safetensors": (rnd * (big // len(rnd) + 1))[:big],
        "tokenizer/vocab.json": b'{"a": 0}',
    }


def dead_endpoint() -> str:
    """A Hub nobody answers (a port just closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def tier_objects(tier: Any) -> list[str]:
    fs = tier.fs()
    try:
        return sorted(p for p in fs.find(tier.root) if not p.endswith(".provender-tier.json"))
    except FileNotFoundError:
        return []


def check_consistent(tier: Any) -> dict[str, Any]:
    """Every ref names a readable manifest, every manifest's blobs exist and hash right, no temp files."""
    fs, root = tier.fs(), tier.root
    paths = fs.find(root)
    assert not [p for p in paths if "/.tmp-" in p], paths
    refs = [p for p in paths if p.rsplit("/", 2)[-2] == "refs"]
    manifests = [p for p in paths if p.endswith(".json") and "/entries/" in p and "/refs/" not in p]
    assert refs and manifests
    for ref in refs:
        snap = fs.cat_file(ref).decode()
        assert f"{ref.rsplit('/refs/', 1)[0]}/{snap}.json" in manifests
    blobs: dict[str, bytes] = {}
    for path in manifests:
        manifest = json.loads(fs.cat_file(path))
        for f in manifest["files"]:
            data = blobs.get(f["sha256"]) or fs.cat_file(f"{root}/blobs/sha256/{f['sha256']}")
            assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
            blobs[f["sha256"]] = data
    return {"refs": refs, "manifests": manifests, "blobs": blobs}


@pytest.fixture
def hub() -> Any:
    h = FakeHub()
    h.add("org/model", repo_files(0))
    yield h
    h.close()


# -- two machines ----------------------------------------------------------------------------


def test_second_machine_gets_the_model_from_the_tier_with_zero_hub_requests(
    tier: Any, hub: FakeHub, tmp_path: Path, make_env: Any
) -> None:
    first = machine("pull", "org/model", env=make_env(tmp_path / "a", tier, hub.endpoint))
    assert first["source"] == "hub" and first["pushed"] and first["bytes_from_hub"] > 200_000
    requests, sent = hub.requests, hub.bytes_sent
    assert requests > 0

    second = machine("pull", "org/model", env=make_env(tmp_path / "b", tier, hub.endpoint))
    assert second["source"] == "remote"
    assert second["bytes_from_remote"] == sum(len(v) for v in repo_files(0).values())
    assert (hub.requests, hub.bytes_sent) == (requests, sent)  # zero Hub requests
    assert second["stats"]["remote_hits"] == 1 and second["stats"]["bytes_from_remote"] == second["bytes_from_remote"]

    # the same files, in huggingface_hub's own layout: `hf` / scan_cache_dir read it
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(tmp_path / "b" / "hub")
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == "org/model" and repo.nb_files == 3
    (rev,) = repo.revisions
    assert rev.refs == frozenset({"main"})
    for f in rev.files:
        rel = f.file_path.relative_to(rev.snapshot_path).as_posix()
        assert f.file_path.is_symlink() and not os.path.isabs(os.readlink(f.file_path))
        assert f.file_path.read_bytes() == repo_files(0)[rel]
    a_snap = CacheManager(tmp_path / "a", "1GB", remote=None).get("org/model").model_path
    assert a_snap.name == rev.commit_hash  # the same commit as the Hub download
    assert CacheManager(tmp_path / "b", "1GB", remote=None).verify() == []


def test_the_tier_serves_a_machine_whose_hub_is_unreachable_or_offline(
    file_tier: Any, hub: FakeHub, tmp_path: Path, make_env: Any
) -> None:
    tier = file_tier  # the Hub side is what this test is about (the S3 tier serves an unreachable Hub above)
    machine("pull", "org/model", env=make_env(tmp_path / "a", tier, hub.endpoint))
    dead = machine("pull", "org/model", env=make_env(tmp_path / "b", tier, dead_endpoint()))
    offline = machine("pull", "org/model", env=make_env(tmp_path / "c", tier, hub.endpoint, HF_HUB_OFFLINE="1"))
    assert dead["source"] == offline["source"] == "remote"
    assert not dead["warnings"] and not offline["warnings"]


def test_second_machine_generates_with_the_model_from_the_tier(
    s3_tier: Any, tmp_path: Path, make_env: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("mlx_lm", reason="needs mlx-lm")
    from provender_mlx.testing import build_tiny_llama

    model = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny", seed=0)
    hub = FakeHub()
    try:
        hub.add("org/tiny", {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()})
        first = machine("pull", "org/tiny", env=make_env(tmp_path / "a", s3_tier, hub.endpoint))
        requests = hub.requests
        second = machine("generate", "org/tiny", str(model), env=make_env(tmp_path / "b", s3_tier, dead_endpoint()))
        assert hub.requests == requests
    finally:
        hub.close()
    assert first["source"] == "hub" and second["source"] == "remote"
    assert second["text"] == second["expected"] and second["text"]  # the same model, the same greedy tokens


# -- corruption, outages, races --------------------------------------------------------------


def test_a_corrupt_blob_in_the_tier_is_refused_and_never_enters_a_cache(
    tier: Any, hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def machine_b(name: str) -> CacheManager:
        return CacheManager(tmp_path / name, "1GB", remote=RemoteTier(tier.url, storage_options=tier.storage_options))

    machine_b("a").pull("org/model", endpoint=hub.endpoint, progress=False)  # in-process: two caches, two machines
    big = repo_files(0)["model.safetensors"]
    sha = hashlib.sha256(big).hexdigest()
    blob = f"{tier.root}/blobs/sha256/{sha}"
    fs = tier.fs()
    assert fs.cat_file(blob) == big
    fs.pipe_file(blob, b"\0" * len(big))  # same size, wrong bytes: a bit-rotted or tampered blob

    # the Hub unreachable: the pull fails cleanly, and nothing of the corrupt blob is in the cache
    cache_b = machine_b("b")
    with pytest.raises(ModelNotFoundError):
        cache_b.pull("org/model", endpoint=dead_endpoint(), progress=False)
    assert any("does not match its sha256" in r.getMessage() for r in caplog.records), caplog.text
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file() and p.stat().st_size == len(big)]
    assert cache_b.entries() == [] and cache_b.stats().remote_errors == 1

    # the Hub reachable: a clear warning, the Hub serves, and the write-through repairs the tier
    downloads = len(hub.downloads)
    cache_c = machine_b("c")
    ok = cache_c.pull("org/model", endpoint=hub.endpoint, progress=False)
    assert ok.source == "hub" and len(hub.downloads) > downloads
    assert any("does not match its sha256" in w and "from the Hub instead" in w for w in ok.warnings)
    assert cache_c.stats().remote_errors == 1 and ok.pushed
    assert CacheManager(tmp_path / "c", "1GB", remote=None).verify() == []
    assert fs.cat_file(blob) == big  # re-uploaded whole
    assert machine_b("d").pull("org/model", endpoint=dead_endpoint(), progress=False).source == "remote"


def test_a_hostile_manifest_or_another_format_is_refused(file_tier: Any, hub: FakeHub, tmp_path: Path) -> None:
    def manager(name: str) -> CacheManager:
        return CacheManager(tmp_path / name, "1GB", remote=RemoteTier(file_tier.url))

    manager("a").pull("org/model", endpoint=hub.endpoint, progress=False)
    (manifest_path,) = (file_tier.path / "entries").glob("*/*.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["path"] = "../../../../escaped.json"  # a tier anyone can write to is not trusted
    manifest_path.write_text(json.dumps(manifest))
    got = manager("b").pull("org/model", endpoint=hub.endpoint, progress=False)
    assert got.source == "hub" and any("is not valid" in w for w in got.warnings), got.warnings
    assert not list(tmp_path.rglob("escaped.json"))
    assert got.pushed and json.loads(manifest_path.read_text())["files"][0]["path"] == "config.json"  # repaired

    (file_tier.path / ".provender-tier.json").write_text('{"provender_tier": 99}')  # a newer provender's tier
    got = manager("c").pull("org/model", endpoint=hub.endpoint, progress=False)
    assert got.source == "hub" and any("format 99" in w for w in got.warnings), got.warnings
    with pytest.raises(RemoteTierError, match="format 99"):
        RemoteTier(file_tier.url).entries()


def test_the_tier_going_away_mid_run_leaves_both_caches_working(own_s3_tier: Any, hub: FakeHub, tmp_path: Path) -> None:
    tier = own_s3_tier
    hub.add("org/other", repo_files(1))
    for name in ("a", "b"):  # in-process: two caches, two machines
        remote = RemoteTier(tier.url, storage_options=tier.storage_options, timeout=3)
        CacheManager(tmp_path / name, "1GB", remote=remote).pull("org/model", endpoint=hub.endpoint, progress=False)
    assert CacheManager(tmp_path / "b", "1GB", remote=None).stats().remote_hits == 1

    tier.server.stop()  # the object store goes away
    started = time.monotonic()
    a = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(tier.url, storage_options=tier.storage_options))
    b = CacheManager(tmp_path / "b", "1GB", remote=RemoteTier(tier.url, storage_options=tier.storage_options))
    again = a.pull("org/model", endpoint=hub.endpoint, progress=False)  # in the cache: the tier is not even asked
    other = b.pull("org/other", endpoint=hub.endpoint, progress=False)  # a miss: the tier fails, the Hub serves
    assert again.source == "cache" and not again.warnings
    assert other.source == "hub" and not other.pushed
    assert any("remote tier" in w and "from the Hub instead" in w for w in other.warnings)
    assert b.stats().remote_errors == 1
    assert time.monotonic() - started < 30  # an unreachable tier costs seconds, not minutes
    assert {e.name for e in b.entries()} == {"org/model", "org/other"}
    assert a.verify() == b.verify() == []

    with pytest.raises(RemoteTierError, match=tier.url):
        RemoteTier(tier.url, timeout=2).entries()


def test_a_tier_that_never_answers_times_out_and_the_hub_serves(hub: FakeHub, tmp_path: Path) -> None:
    import socket
    import threading

    with socket.socket() as silent:  # accepts connections, never answers: a hung or overloaded store
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        conns: list[socket.socket] = []
        threading.Thread(target=lambda: [conns.append(silent.accept()[0]) for _ in range(16)], daemon=True).start()
        options = {"endpoint_url": f"http://127.0.0.1:{silent.getsockname()[1]}", "key": "k", "secret": "s"}
        cm = CacheManager(
            tmp_path / "c", "1GB", remote=RemoteTier("s3://bucket/tier", storage_options=options, timeout=0.5)
        )
        started = time.monotonic()
        result = cm.pull("org/model", endpoint=hub.endpoint, progress=False)
        took = time.monotonic() - started
        for conn in conns:
            conn.close()
    assert result.source == "hub" and not result.pushed
    assert any("timed out" in w for w in result.warnings), result.warnings
    assert took < 15 and cm.stats().remote_errors == 1  # given up once; not asked again in that pull
    assert cm.verify() == []


def test_a_file_tier_that_goes_away_leaves_the_cache_working(
    file_tier: Any, hub: FakeHub, tmp_path: Path, make_env: Any
) -> None:
    machine("pull", "org/model", env=make_env(tmp_path / "a", file_tier, hub.endpoint))
    moved = file_tier.path.rename(tmp_path / "unmounted")
    file_tier.path.write_text("not a folder any more")  # every access to the tier fails now
    result = machine("pull", "org/model", env=make_env(tmp_path / "b", file_tier, hub.endpoint))
    assert result["source"] == "hub" and result["warnings"] and not result["pushed"]
    assert CacheManager(tmp_path / "b", "1GB", remote=None).verify() == []
    assert moved.exists()


def test_two_machines_missing_the_same_model_at_once_leave_a_consistent_tier(
    tier: Any, hub: FakeHub, tmp_path: Path, make_env: Any
) -> None:
    hub.throttle = 0.01  # both downloads overlap
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MACHINE, "pull", "org/model"],
            env=make_env(tmp_path / name, tier, hub.endpoint),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    hub.throttle = 0.0
    # both may download from the Hub (there is no lock between machines); each is complete
    assert {r["source"] for r in results} <= {"hub", "remote"}
    for name in ("a", "b"):
        assert CacheManager(tmp_path / name, "1GB", remote=None).verify() == []
    found = check_consistent(tier)
    assert len(found["blobs"]) == 3  # each blob stored once, whoever wrote it
    assert len(found["manifests"]) == 1  # the same snapshot, written under the same name
    requests = hub.requests
    assert machine("pull", "org/model", env=make_env(tmp_path / "c", tier, hub.endpoint))["source"] == "remote"
    assert hub.requests == requests


# -- read-only, imports, push, stats ---------------------------------------------------------


def test_read_only_mode_writes_nothing(tier: Any, hub: FakeHub, tmp_path: Path, make_files: Any) -> None:
    ro = RemoteTier(tier.url, read_only=True, storage_options=tier.storage_options)
    cm = CacheManager(tmp_path / "ro", "1GB", remote=ro)
    result = cm.pull("org/model", endpoint=hub.endpoint, progress=False)
    assert result.source == "hub" and not result.pushed
    cm.import_model(make_files("m", {"w.bin": 1000}), "me/model")
    with pytest.raises(RemoteNotConfiguredError, match="read-only"):
        cm.push("org/model")
    assert tier_objects(tier) == []

    # a writer fills the tier; the read-only machine reads from it
    writer = CacheManager(tmp_path / "rw", "1GB", remote=RemoteTier(tier.url, storage_options=tier.storage_options))
    hub.add("org/new", repo_files(2))
    writer.pull("org/new", endpoint=hub.endpoint, progress=False)
    assert cm.pull("org/new", endpoint=dead_endpoint(), progress=False).source == "remote"


def test_an_imported_model_is_written_through_and_pulled_on_a_second_machine(
    tier: Any, tmp_path: Path, make_files: Any, make_env: Any
) -> None:
    src = make_files("mine", {"config.json": b'{"x": 1}', "weights/w.safetensors": 300_000})
    first = machine("import", "me/imported", str(src), env=make_env(tmp_path / "a", tier))
    (entry,) = RemoteTier(tier.url, storage_options=tier.storage_options).entries()
    assert (entry.key, entry.name, entry.kind, entry.files) == (first["key"], "me/imported", "local", 2)
    assert entry.to_dict()["pushed_at"].endswith("+00:00")

    second = machine("pull", "me/imported", env=make_env(tmp_path / "b", tier, dead_endpoint()))
    assert second["source"] == "remote" and second["key"] == first["key"]
    cm = CacheManager(tmp_path / "b", "1GB", remote=None)
    got = cm.get("me/imported")
    assert got.kind == "local" and cm.verify() == []
    for rel in ("config.json", "weights/w.safetensors"):
        assert (got.model_path / rel).read_bytes() == (src / rel).read_bytes()
    # on the first machine the import is in the cache: nothing is fetched
    first_cache = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(tier.url, storage_options=tier.storage_options))
    assert first_cache.pull("me/imported", progress=False).source == "cache"


def test_push_uploads_an_entry_and_skips_blobs_already_there(tier: Any, hub: FakeHub, tmp_path: Path) -> None:
    shared = repo_files(0)
    hub.add("org/fork", {**shared, "README.md": b"a fork sharing the weights"})
    cm = CacheManager(tmp_path / "x", "1GB", remote=None)  # no tier while pulling: nothing written through
    for name in ("org/model", "org/fork"):
        cm.pull(name, endpoint=hub.endpoint, progress=False)
    with pytest.raises(RemoteNotConfiguredError):
        cm.push("org/model")

    pusher = CacheManager(tmp_path / "x", "1GB", remote=RemoteTier(tier.url, storage_options=tier.storage_options))
    first = pusher.push("org/model")
    assert (first.files, first.uploaded, first.already_there) == (3, 3, 0)
    assert first.bytes_uploaded == sum(len(v) for v in shared.values())
    fork = pusher.push("org/fork")
    assert (fork.files, fork.uploaded, fork.already_there) == (4, 1, 3)  # only the README is new
    assert pusher.push("org/model").uploaded == 0
    assert pusher.remote is not None
    assert pusher.remote.size() == first.bytes_uploaded + len(b"a fork sharing the weights")
    assert [e.name for e in pusher.remote.entries()] == ["org/fork", "org/model"]


def test_stats_count_remote_hits_misses_and_errors(tier: Any, hub: FakeHub, tmp_path: Path) -> None:
    def manager(name: str, url: str | None = None) -> CacheManager:
        remote = RemoteTier(url or tier.url, storage_options=tier.storage_options, timeout=2)
        return CacheManager(tmp_path / name, "1GB", remote=remote)

    a = manager("a")
    a.pull("org/model", endpoint=hub.endpoint, progress=False)
    assert (a.stats().remote_misses, a.stats().remote_hits) == (1, 0)
    b = manager("b")
    b.pull("org/model", endpoint=hub.endpoint, progress=False)
    stats = b.stats()
    assert (stats.remote_hits, stats.remote_misses, stats.remote_errors) == (1, 0, 0)
    assert stats.bytes_from_remote == sum(len(v) for v in repo_files(0).values())
    assert stats.to_dict()["remote_hits"] == 1
    b.pull("org/model", endpoint=hub.endpoint, progress=False)  # a local hit: the tier is not asked
    assert b.stats().remote_hits == 1


def test_a_partial_pull_is_served_by_the_full_snapshot_or_its_own(tier: Any, hub: FakeHub, tmp_path: Path) -> None:
    def manager(name: str) -> CacheManager:
        return CacheManager(tmp_path / name, "1GB", remote=RemoteTier(tier.url, storage_options=tier.storage_options))

    hub.add("org/part", repo_files(3))
    part = manager("a").pull("org/part", endpoint=hub.endpoint, allow_patterns=["*.json"], progress=False)
    assert part.source == "hub" and part.pushed
    got = manager("b").pull("org/part", endpoint=dead_endpoint(), allow_patterns=["*.json"], progress=False)
    files = repo_files(3)
    assert got.source == "remote" and got.bytes_from_remote == len(files["config.json"] + files["tokenizer/vocab.json"])
    assert sorted(p.name for p in got.entry.model_path.iterdir()) == ["config.json", "tokenizer"]  # as the Hub gave
    with pytest.raises(ModelNotFoundError):  # the tier has only part of it: not taken for the whole repo
        manager("c").pull("org/part", endpoint=dead_endpoint(), progress=False)
    manager("d").pull("org/model", endpoint=hub.endpoint, progress=False)  # the whole repo, written through
    only = manager("e").pull("org/model", endpoint=dead_endpoint(), allow_patterns="tokenizer/*", progress=False)
    assert only.source == "remote" and only.bytes_from_remote == len(b'{"a": 0}')


def test_a_small_local_cache_in_front_of_the_tier_gets_evicted_models_back_from_it(
    file_tier: Any, hub: FakeHub, tmp_path: Path
) -> None:
    hub.add("org/other", repo_files(1))
    size = sum(len(v) for v in repo_files(0).values())
    cm = CacheManager(tmp_path / "small", int(size * 1.5), remote=RemoteTier(file_tier.url))  # room for one model
    assert cm.pull("org/model", endpoint=hub.endpoint, progress=False).source == "hub"
    assert cm.pull("org/other", endpoint=hub.endpoint, progress=False).source == "hub"
    assert [e.name for e in cm.entries()] == ["org/other"]  # LRU: org/model was evicted
    requests = hub.requests
    back = cm.pull("org/model", endpoint=hub.endpoint, progress=False)
    assert back.source == "remote" and hub.requests == requests and cm.stats().evictions == 2
    assert [e.name for e in cm.entries()] == ["org/model"] and cm.verify() == []


# -- configuration ---------------------------------------------------------------------------


def test_a_bad_remote_url_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from helpers import run_cli
    from provender import load_settings

    monkeypatch.setenv("PROVENDER_REMOTE__URL", "ftp://server/models")
    with pytest.raises(ConfigError, match=r"remote\.url") as exc:
        load_settings()
    assert exc.value.setting == "remote.url"
    proc = run_cli("cache", "ls", env={"PROVENDER_CACHE__DIR": str(tmp_path / "c")})
    assert proc.returncode == 2 and "remote.url" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ConfigError, match="not a URL"):
        RemoteTier("not a url")


def test_the_remote_settings_reach_the_cache(
    s3_tier: Any, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint from the setting alone
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(tmp_path / "c"))
    monkeypatch.setenv("PROVENDER_REMOTE__URL", s3_tier.url)
    monkeypatch.setenv("PROVENDER_REMOTE__ENDPOINT_URL", s3_tier.storage_options["endpoint_url"])
    monkeypatch.setenv("PROVENDER_REMOTE__TIMEOUT", "5s")
    cm = CacheManager()
    assert cm.remote is not None and (cm.remote.url, cm.remote.timeout, cm.remote.read_only) == (s3_tier.url, 5, False)
    assert cm.pull("org/model", endpoint=hub.endpoint, progress=False).pushed
    assert [e.name for e in cm.remote.entries()] == ["org/model"]
    monkeypatch.setenv("PROVENDER_REMOTE__READ_ONLY", "true")
    assert CacheManager().remote.read_only  # type: ignore[union-attr]
    assert CacheManager(tmp_path / "c", "1GB").remote is None  # both given: the settings are not read
    assert CacheManager(tmp_path / "c", "1GB", remote=s3_tier.url).remote.url == s3_tier.url  # type: ignore[union-attr]


def test_without_remote_url_nothing_changes_and_fsspec_is_not_imported(tmp_path: Path) -> None:
    code = (
        "import sys; from provender import CacheManager; cm = CacheManager(); "
        "print(cm.remote, 'fsspec' in sys.modules, 's3fs' in sys.modules)"
    )
    env = {**os.environ, "PROVENDER_CACHE__DIR": str(tmp_path / "c")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["None", "False", "False"]
    env["PROVENDER_REMOTE__URL"] = "s3://bucket/prefix"  # set: a tier, still not imported until used
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["RemoteTier('s3://bucket/prefix',", "read_only=False)", "False", "False"]


def test_a_missing_extra_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['fsspec'] = None; sys.modules['s3fs'] = None\n"
        "from provender import RemoteTier\n"
        "try:\n    RemoteTier('s3://bucket/prefix')\nexcept ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "provender[remote]"' in out


# -- the pure parts ----------------------------------------------------------------------------


def test_snapshot_names_depend_on_content_only_and_paths_cannot_leave_their_folder() -> None:
    from provender._cache._remote import ref_name, snapshot_id
    from provender._cache._tier_content import safe_path as _safe_path

    files = [{"path": "a.json", "size": 2, "sha256": "0" * 64, "etag": "1" * 40}]
    one = {"key": "k", "kind": "hub", "repo_id": "o/m", "commit": "c" * 40, "files": files, "pushed_at": 1.0}
    two = {**one, "pushed_at": 2.0, "pushed_by": "other-host"}
    assert snapshot_id(one) == snapshot_id(two)  # two machines writing one snapshot write one object
    assert snapshot_id(one) != snapshot_id({**one, "commit": "d" * 40})
    assert ref_name("refs/pr/1") == "refs%2Fpr%2F1"
    patterns = {"allow": ["*.json"], "ignore": None}
    assert ref_name("main", patterns).startswith("main@") and ref_name("main", patterns) != ref_name("main")
    long = "/".join(["d" * 200] * 6)  # every name fits, the whole path is longer than a filesystem takes
    for bad in ("../x", "/etc/passwd", "a/../../b", "a//b", "", "a\\b", "x\0y", ".provender-entry.json", "./a", long):
        with pytest.raises(ValueError):
            _safe_path(bad)
    assert _safe_path("sub/dir/file.bin") == "sub/dir/file.bin"
