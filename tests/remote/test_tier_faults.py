"""The remote tier fumbled with: Ctrl-C in the middle of a transfer, a tier folder inside the cache,
damaged tier content that used to crash a pull, a folder where a blob belongs, an empty or missing
tier while the Hub cannot be reached. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_tier import check_consistent, dead_endpoint

from fakehub import FakeHub
from provender import CacheManager, RemoteTier
from provender.errors import ConfigError, DiskFullError, ModelNotFoundError, RemoteTierError

BLOB = 2_000_000  # four blobs of 2 MB through a proxy giving each connection 200 KB/s: 10 s a blob


def _files() -> dict[str, bytes]:
    return {"config.json": b'{"model_type": "x"}', **{f"w{i}.safetensors": bytes([i]) * BLOB for i in range(4)}}


class SlowProxy:
    """A TCP proxy on 127.0.0.1 in front of a server, at `rate` bytes/s per connection and direction:
    a slow object store (a real one: moto's server behind it)."""

    def __init__(self, target: str, rate: float) -> None:
        host, port = target.rsplit("//", 1)[1].split(":")
        self.target, self.rate = (host, int(port)), rate
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(16384):
                dst.sendall(data)
                time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


# Ctrl-C as in a terminal: a runner started in the background (`cmd &` without job control) ignores
# SIGINT, and a child inherits that, so the child asks for Python's own handler back
CODE = r"""
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from provender import CacheManager
cm = CacheManager()
print("STARTED", flush=True)
cm.pull(sys.argv[2], progress=False) if sys.argv[1] == "pull" else cm.push(sys.argv[2])
print("FINISHED", flush=True)
"""


def _interrupt(op: str, env: dict[str, str], started: Any) -> float:
    """Run `op` in a process, SIGINT it once `started()` says its transfer began; seconds it took to end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CODE, op, "org/slow"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not started():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "FINISHED" not in out and "KeyboardInterrupt" in err, (out, err[-2000:])
    return took


def test_ctrl_c_in_a_pull_from_the_tier_or_a_push_stops_at_once_and_the_next_run_completes(
    s3_tier: Any, tmp_path: Path, make_env: Any
) -> None:
    hub = FakeHub()
    hub.add("org/slow", _files())
    proxy = SlowProxy(s3_tier.storage_options["endpoint_url"], rate=200_000)
    try:

        def manager(name: str) -> CacheManager:
            remote = RemoteTier(s3_tier.url, storage_options=s3_tier.storage_options)
            return CacheManager(tmp_path / name, "1GB", remote=remote)

        manager("a").pull("org/slow", endpoint=hub.endpoint, progress=False)  # written through, at full speed
        slow = make_env(tmp_path / "b", s3_tier, dead_endpoint(), AWS_ENDPOINT_URL=proxy.endpoint)

        # a pull from the slow tier, interrupted once the blobs are streaming: it ends at once (it used to
        # go on until every blob had arrived, 10 s here, minutes for a real model)
        took = _interrupt("pull", slow, lambda: any((tmp_path / "b" / "tmp").glob("*/*")))
        assert took < 4, took
        again = manager("b").pull("org/slow", endpoint=dead_endpoint(), progress=False)
        assert again.source == "remote" and manager("b").verify() == []
        assert not [p for p in (tmp_path / "b" / "tmp").iterdir()]  # the interrupted staging is gone

        # a push to the slow tier, interrupted while the blobs are going up: it ends at once, and the
        # tier shows nothing half-written (no manifest names blobs it lacks); the next push completes
        fs, bucket = s3_tier.fs(), s3_tier.url.replace("/models", "/other")
        pusher = make_env(tmp_path / "a", None, AWS_ENDPOINT_URL=proxy.endpoint, PROVENDER_REMOTE__URL=bucket)
        took = _interrupt("push", pusher, lambda: fs.exists(f"{bucket[5:]}/.provender-tier.json"))
        assert took < 4, took
        fs.invalidate_cache()
        assert not fs.exists(f"{bucket[5:]}/entries")
        remote = RemoteTier(bucket, storage_options=s3_tier.storage_options)
        done = CacheManager(tmp_path / "a", "1GB", remote=remote).push("org/slow")
        assert done.files == 5 and done.uploaded + done.already_there == 5
        check_consistent(type(s3_tier)("s3", bucket, storage_options=s3_tier.storage_options))
    finally:
        proxy.close()
        hub.close()


def test_a_file_tier_inside_the_cache_folder_or_around_it_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for url in (
        cache.as_uri(),
        (cache / "tmp" / "tier").as_uri(),
        (cache / "objects" / "t").as_uri(),
        tmp_path.as_uri(),
    ):
        with pytest.raises(ConfigError, match="inside one another") as exc:
            CacheManager(cache, "1GB", remote=url)
        assert exc.value.setting == "remote.url"
    assert not cache.exists()  # refused before anything was written
    (tmp_path / "link").symlink_to(cache, target_is_directory=True)  # through a link: the same folder
    with pytest.raises(ConfigError, match="inside one another"):
        CacheManager(cache, "1GB", remote=(tmp_path / "link" / "tier").as_uri())
    assert CacheManager(cache, "1GB", remote=(tmp_path / "tier").as_uri()).remote is not None  # beside it: fine


@pytest.fixture
def hub() -> Any:
    h = FakeHub()
    h.add("org/model", {"config.json": b"{}", "sub/w.safetensors": b"w" * 5000, "tok.json": b'{"a": 0}'})
    yield h
    h.close()


def test_a_manifest_naming_a_file_as_a_folder_or_a_too_long_name_falls_back_to_the_hub(
    file_tier: Any, hub: FakeHub, tmp_path: Path
) -> None:
    def manager(name: str) -> CacheManager:
        return CacheManager(tmp_path / name, "1GB", remote=RemoteTier(file_tier.url))

    manager("a").pull("org/model", endpoint=hub.endpoint, progress=False)
    (path,) = (file_tier.path / "entries").glob("*/*.json")
    good = json.loads(path.read_text())
    first = good["files"][0]
    for files, why in (
        ([*good["files"], {**first, "path": first["path"] + "/inner"}], "listed as a file and as a folder"),
        ([{**first, "path": "x" * 256}, *good["files"][1:]], "bad path"),
    ):
        path.write_text(json.dumps({**good, "files": files}))
        b = manager("b")
        got = b.pull("org/model", endpoint=hub.endpoint, progress=False)  # it used to raise FileExistsError
        assert got.source == "hub" and any(why in w for w in got.warnings), got.warnings
        assert b.verify() == [] and sorted(p.name for p in got.entry.model_path.iterdir()) == [
            "config.json",
            "sub",
            "tok.json",
        ]
        assert json.loads(path.read_text())["files"] == good["files"]  # the write-through repaired it
        b.remove("org/model")


def test_a_folder_where_a_blob_belongs_is_refused_never_reported_uploaded(
    file_tier: Any, hub: FakeHub, tmp_path: Path
) -> None:
    cm = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(file_tier.url))
    cm.pull("org/model", endpoint=hub.endpoint, progress=False)
    blob = max((file_tier.path / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    blob.unlink()
    blob.mkdir()  # damaged: a folder stands where the blob belongs (it used to be "uploaded" into it)
    (blob / "keep").write_text("not provender's")
    with pytest.raises(RemoteTierError, match="a folder stands where"):
        cm.push("org/model")
    assert [p.name for p in blob.iterdir()] == ["keep"]  # nothing moved into it, nothing of it deleted
    assert not list(file_tier.path.rglob(".tmp-*"))  # its own temporary object went

    other = file_tier.path / "entries" / ("e" * 64)  # another entry, its manifest a folder: `remote ls` lists the rest
    (other / "refs").mkdir(parents=True)
    (other / "refs" / "main").write_text("f" * 64)
    (other / f"{'f' * 64}.json").mkdir()
    assert [e.name for e in RemoteTier(file_tier.url).entries()] == ["org/model"]  # it used to raise


def test_an_empty_or_missing_tier_with_the_hub_unreachable_says_so(s3_tier: Any, tmp_path: Path) -> None:
    empty = RemoteTier(s3_tier.url, storage_options=s3_tier.storage_options)
    with pytest.raises(ModelNotFoundError, match=f"not in the remote tier {s3_tier.url}; not in the cache"):
        CacheManager(tmp_path / "a", "1GB", remote=empty).pull("org/model", endpoint=dead_endpoint(), progress=False)

    missing = RemoteTier("s3://no-such-bucket-r5/x", storage_options=s3_tier.storage_options)  # a typo
    cm = CacheManager(tmp_path / "b", "1GB", remote=missing)
    with pytest.raises(ModelNotFoundError, match="the remote tier s3://no-such-bucket-r5/x failed"):
        cm.pull("org/model", endpoint=dead_endpoint(), progress=False)
    assert cm.stats().remote_errors == 1  # a missing bucket is a failing tier, not an empty one
    assert os.listdir(tmp_path / "b" / "tmp") == []


def test_a_hub_download_killed_midway_is_completed_from_the_tier(file_tier: Any, tmp_path: Path, make_env: Any) -> None:
    hub = FakeHub()
    hub.add("org/slow", _files())
    try:
        CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(file_tier.url)).pull(
            "org/slow", endpoint=hub.endpoint, progress=False
        )
        hub.throttle = 0.05  # 64 KiB per 50 ms: the weights take seconds, the small files come first
        proc = subprocess.Popen(
            [sys.executable, "-c", CODE, "pull", "org/slow"],
            env=make_env(tmp_path / "b", None, hub.endpoint),  # no tier on this run: a plain Hub download
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        repo = tmp_path / "b" / "hub" / "models--org--slow"
        deadline = time.monotonic() + 60
        while not (list(repo.glob("snapshots/*/config.json")) and list(repo.glob("blobs/*.incomplete"))):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.kill()  # SIGKILL: a partial snapshot (config.json), the weights half-downloaded
        proc.wait()
    finally:
        hub.close()
    b = CacheManager(tmp_path / "b", "1GB", remote=RemoteTier(file_tier.url))
    got = b.pull("org/slow", endpoint=dead_endpoint(), progress=False)  # the partial snapshot used to hide the tier
    assert got.source == "remote" and got.bytes_from_remote == 4 * BLOB  # config.json was there already
    assert b.verify() == [] and os.listdir(tmp_path / "b" / "pending") == []
    for name, data in _files().items():
        assert (got.entry.model_path / name).read_bytes() == data


def test_a_pull_from_the_tier_onto_a_full_disk_is_refused_cleanly(file_tier: Any, tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    hub = FakeHub()
    try:
        hub.add("org/slow", _files())  # 8 MB: more than the 4 MiB disk
        hub.add("org/model", {"config.json": b"{}"})
        writer = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(file_tier.url))
        for name in ("org/slow", "org/model"):
            writer.pull(name, endpoint=hub.endpoint, progress=False)
        small = CacheManager(mnt / "c", "1GB", remote=RemoteTier(file_tier.url))
        with pytest.raises(DiskFullError, match=r"needed 8\.0 MB"):  # refused before a byte is moved
            small.pull("org/slow", endpoint=dead_endpoint(), progress=False)
        assert os.listdir(mnt / "c" / "tmp") == [] and small.entries() == []
        assert small.pull("org/model", endpoint=dead_endpoint(), progress=False).source == "remote"
    finally:
        hub.close()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_pull_and_fetch_take_their_options_once_and_refuse_a_misspelt_one(tmp_path: Path) -> None:
    cm = CacheManager(tmp_path / "c", "1GB", remote=None)
    for verb in (cm.pull, cm.fetch):
        with pytest.raises(TypeError, match="'revison'"):  # a typo is an error, not a download of main
            verb("org/model", revison="v1", progress=False)  # type: ignore[call-arg]
    assert CacheManager.pull.__doc__ and "PullOptions" in CacheManager.pull.__doc__


def test_one_damaged_manifest_does_not_break_the_listing(file_tier: Any, hub: FakeHub, tmp_path: Path) -> None:
    hub.add("org/other", {"config.json": b'{"other": 1}'})
    cm = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(file_tier.url))
    for name in ("org/model", "org/other"):
        cm.pull(name, endpoint=hub.endpoint, progress=False)
    key = cm.get("org/other").key
    (path,) = (file_tier.path / "entries" / key).glob("*.json")
    good = json.loads(path.read_text())
    for bad in ({"files": [1]}, {"pushed_at": "yesterday"}, {"files": [{"size": "big"}]}):
        path.write_text(json.dumps({**good, **bad}))
        assert [e.name for e in RemoteTier(file_tier.url).entries()] == ["org/model"]  # it used to raise


def test_a_tier_whose_fsspec_backend_is_missing_is_refused_when_configured(tmp_path: Path) -> None:
    from provender._cache._remote import _installed

    if _installed("gcsfs") or _installed("adlfs"):
        pytest.skip("gcsfs or adlfs is installed here")
    for url, backend in (("gs://bucket/x", "gcsfs"), ("az://container/x", "adlfs")):
        with pytest.raises(ImportError, match=f"pip install {backend}"):  # it used to fail the first pull (or import)
            CacheManager(tmp_path / "c", "1GB", remote=url)
