"""Fixtures for the remote tier: a real S3-compatible server (moto's standalone server) on
127.0.0.1 at a free port, and a ``file://`` tier.

- `moto_server` (session): one moto server for the whole session; ``.endpoint`` is its URL.
- `s3_tier`: a fresh bucket on it per test; sets the standard AWS variables (credentials,
  region, ``AWS_ENDPOINT_URL``) in this process's environment, so every process the test
  starts reaches the same bucket. Returns a `Tier`: ``url`` (``s3://bucket/prefix``),
  ``storage_options`` (for fsspec / `RemoteTier`), ``env`` (for subprocesses).
- `file_tier`: a ``file://`` URL of a folder under the test's tmp_path.
- `tier`: parametrized over both (``tier.kind`` is ``"s3"`` or ``"file"``).
- `own_moto_server`: a server of the test's own, that the test may stop (the tier going away).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("s3fs", reason='the remote tier tests need provender[remote] (pip install "provender[remote]")')
pytest.importorskip("moto", reason="the S3 tier tests need moto[server]")

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise


class MotoServer:
    """moto's standalone S3-compatible server in a thread, on 127.0.0.1 at a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.running = True

    def stop(self) -> None:
        """Stop serving and close the socket: connections are refused from now on."""
        if not self.running:
            return
        self.running = False
        self._server.stop()
        inner = getattr(self._server, "_server", None)
        if inner is not None:
            inner.server_close()

    def make_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        client.create_bucket(Bucket=name)


@dataclass
class Tier:
    """A tier for a test: its URL, the fsspec storage options and the environment for subprocesses."""

    kind: str
    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    server: MotoServer | None = None
    path: Path | None = None  # the folder of a file:// tier

    def fs(self) -> Any:
        """An fsspec filesystem on the tier (for tests that look at or tamper with what it holds)."""
        import fsspec

        protocol = "s3" if self.kind == "s3" else "file"
        return fsspec.filesystem(protocol, skip_instance_cache=True, **self.storage_options)

    @property
    def root(self) -> str:
        """The tier's root as the filesystem from `fs` names it (no protocol)."""
        return self.url.split("://", 1)[1] if self.kind == "s3" else str(self.path)


def _aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _s3(server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Tier:
    env = _aws_env(server.endpoint)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bucket = f"tier-{uuid.uuid4().hex[:12]}"
    server.make_bucket(bucket)
    options = {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": server.endpoint}
    return Tier("s3", f"s3://{bucket}/models", storage_options=options, env=env, server=server)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def s3_tier(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Tier:
    """A fresh bucket on the session's moto server; the AWS variables point this process (and its children) at it."""
    return _s3(moto_server, monkeypatch)


@pytest.fixture
def own_moto_server() -> Iterator[MotoServer]:
    """A moto server for this test alone, which the test may `stop()` (stopped at the end anyway)."""
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def own_s3_tier(own_moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Tier:
    """Like `s3_tier`, on the test's own server (``tier.server.stop()`` takes the tier away)."""
    return _s3(own_moto_server, monkeypatch)


@pytest.fixture
def file_tier(tmp_path: Path) -> Tier:
    """A ``file://`` tier: a folder standing for a shared filesystem (``file:///mnt/shared``)."""
    path = tmp_path / "shared-tier"
    path.mkdir()
    return Tier("file", path.as_uri(), path=path)


@pytest.fixture(params=["s3", "file"])
def tier(request: pytest.FixtureRequest) -> Tier:
    """Each test that takes it runs on an S3 tier (moto) and on a ``file://`` tier."""
    name = "s3_tier" if request.param == "s3" else "file_tier"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def machine_env(cache_dir: Path, tier: Tier | None, hub_endpoint: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of one "machine": its own cache folder, the shared tier, the stand-in Hub."""
    env = dict(os.environ)
    env["PROVENDER_CACHE__DIR"] = str(cache_dir)
    if tier is not None:
        env["PROVENDER_REMOTE__URL"] = tier.url
        env.update(tier.env)
    if hub_endpoint is not None:
        env["HF_ENDPOINT"] = hub_endpoint
    env.update(extra)
    return env


@pytest.fixture
def make_env() -> Any:
    """`machine_env` as a fixture: ``make_env(cache_dir, tier, hub_endpoint, **extra) -> env``."""
    return machine_env
