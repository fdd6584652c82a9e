"""The remote tier: a shared, content-addressed store of cache entries on an existing object store.

Any fsspec URL: ``s3://bucket/prefix`` (s3fs, any S3-compatible endpoint), ``gs://``, ``az://``,
``file:///mnt/shared``. This module knows the tier's layout and nothing of the local cache's
(`provender._cache._tier_sync` moves entries between the two). Layout under the URL::

    .provender-tier.json                  format marker ({"provender_tier": 1, ...})
    blobs/sha256/<hex>                    file contents, named by their sha256: a blob shared by two
                                          repos or two revisions is stored once
    entries/<key>/<snapshot>.json         one immutable manifest per snapshot, named by the sha256 of
                                          what it describes (its files, commit, patterns)
    entries/<key>/refs/<ref>              text: the snapshot a revision (``main``, a commit, a tag;
                                          ``<revision>@<patterns hash>`` for a partial download;
                                          ``latest`` for an imported entry) points at

Consistency without a lock between machines: blobs are uploaded before the manifest that names
them, and the manifest before the ref, so a manifest never names a missing blob; each object is
written whole (an object store's put is atomic; on a filesystem a temporary name is renamed into
place). Two writers of the same snapshot write the same names with the same content. Nothing is
ever deleted from the tier by provender. fsspec and s3fs are imported only when the tier is used
(``pip install "provender[remote]"``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any
from urllib.parse import quote

from provender._cache._tier_content import RemoteEntry as RemoteEntry  # where callers look for it
from provender._cache._tier_content import listed_entry, rank
from provender.errors import ConfigError, RemoteTierError

logger = logging.getLogger(__name__)

FORMAT = 1
MARKER = ".provender-tier.json"
INSTALL_HINT = 'the remote tier needs fsspec and s3fs: pip install "provender[remote]"'
SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "file", "local", "memory", "hdfs", "webhdfs")
S3_SCHEMES = ("s3", "s3a")
BACKENDS = {"gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs", "adl": "adlfs"}
_RENAME_FS = ("file", "local", "hdfs", "webhdfs", "sftp", "ssh")  # real directories: write a temp name, rename
_HEX64 = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20
TMP_PREFIX = ".tmp-"


def check_url(url: str, setting: str = "remote.url") -> str:
    """The URL unchanged if its scheme is one fsspec serves here; else a ConfigError naming the setting."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest or scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"invalid setting {setting}: {url!r} is not a URL of a supported store "
            f"(use {', '.join(s + '://' for s in ('s3', 'gs', 'az', 'file'))}...; e.g. s3://bucket/prefix, "
            "file:///mnt/shared)",
            setting=setting,
            value=url,
        )
    return url


def snapshot_id(manifest: dict[str, Any]) -> str:
    """The name of a manifest: the sha256 of what it describes (not who pushed it or when)."""
    described = {k: manifest.get(k) for k in ("key", "kind", "repo_id", "repo_type", "commit", "patterns", "filename")}
    described["files"] = [[f["path"], f["size"], f["sha256"], f.get("etag")] for f in manifest["files"]]
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def ref_name(revision: str, patterns: dict[str, Any] | None = None) -> str:
    """A ref's object name: the revision (quoted: ``refs/pr/1`` is one name), plus the patterns' hash if partial."""
    name = quote(revision, safe="")
    if patterns:
        name += "@" + hashlib.sha256(json.dumps(patterns, sort_keys=True).encode()).hexdigest()[:16]
    return name


def _translate(url: str, exc: BaseException) -> RemoteTierError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower() or "timed out" in reason.lower():
        reason = f"timed out ({reason})"
    elif isinstance(exc, PermissionError):
        reason = f"permission denied ({reason})"
    return RemoteTierError(url, reason)


def _no_bucket(exc: FileNotFoundError) -> bool:
    """An S3 "not found" that is about the bucket, not an object: the tier is not there at all."""
    return "bucket does not exist" in str(exc)


def _installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (the extra is optional)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # blocked (sys.modules[name] = None) or broken
        return False


class RemoteTier:
    """A shared tier of the cache on an object store or shared filesystem (any fsspec URL).

    ``RemoteTier(url, read_only=False, storage_options=None, timeout=30.0)`` does no I/O: the
    store is reached on first use. ``storage_options`` go to the fsspec filesystem (for s3:
    ``endpoint_url``, ``key``, ``secret``...; the standard ``AWS_*`` variables, ``AWS_ENDPOINT_URL``
    included, work as everywhere). ``timeout`` (seconds) bounds each request to an S3 store, with
    few retries, so an unreachable tier costs seconds, not minutes. Every failure is a
    `RemoteTierError` naming the URL.
    """

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        storage_options: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> None:
        check_url(url, "remote tier URL")
        self.scheme = url.partition("://")[0].lower()
        if not _installed("fsspec") or (self.scheme in S3_SCHEMES and not _installed("s3fs")):
            raise ImportError(INSTALL_HINT)
        backend = BACKENDS.get(self.scheme)  # else the first use fails (an import after the import was made)
        if backend is not None and not _installed(backend):
            raise ImportError(
                f"the remote tier {url} needs {backend}, fsspec's backend for {self.scheme}://: pip install {backend}"
            )
        self.url = url.rstrip("/")
        self.read_only = read_only
        self.timeout = float(timeout)
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None
        self._root = ""
        self._marked = False  # the format marker is known to be there
        self._checked = False  # the marker was read (a tier of another format is refused)

    def __repr__(self) -> str:
        return f"RemoteTier({self.url!r}, read_only={self.read_only})"

    def local_folder(self) -> str | None:
        """The tier's folder when it is on this machine's filesystem (``file://``, ``local://``), else None."""
        if self.scheme not in ("file", "local"):
            return None
        return os.path.realpath(self.url.partition("://")[2] or "/")  # relative: from here, as fsspec takes it

    def check_apart(self, cache_dir: str | os.PathLike[str]) -> None:
        """Refuse (ConfigError, ``remote.url``) a tier folder that is the cache folder, inside it or around it:
        the cache would take the tier's files for its own (and evict them), the tier would write into the cache."""
        folder = self.local_folder()
        if folder is None:
            return
        cache = os.path.realpath(cache_dir)
        if os.path.commonpath([folder, cache]) in (folder, cache):  # one is the other, or inside it
            raise ConfigError(
                f"invalid setting remote.url: the tier's folder {folder} and the cache folder {cache} are "
                "inside one another; give the tier a folder of its own, outside cache.dir (and not around it)",
                setting="remote.url",
                value=self.url,
            )

    # -- the store ---------------------------------------------------------------------

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (made on first use)."""
        if self._fs is None:
            try:
                from fsspec.core import url_to_fs  # type: ignore[import-untyped,import-not-found,unused-ignore]
            except ImportError:
                raise ImportError(INSTALL_HINT) from None
            options = dict(self.storage_options)
            if self.scheme in S3_SCHEMES:
                config = {
                    "connect_timeout": self.timeout,
                    "read_timeout": self.timeout,
                    "retries": {"max_attempts": 2, "mode": "legacy"},
                }
                options["config_kwargs"] = {**config, **options.get("config_kwargs", {})}
                options.setdefault("skip_instance_cache", True)
            with self._errors():
                fs, root = url_to_fs(self.url, **options)
            if self.scheme in S3_SCHEMES:
                fs.retries = 1  # s3fs tries each request 5 times on top of botocore: a dead tier would take minutes
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs

    def path(self, *parts: str) -> str:
        """A path under the tier's root, as its filesystem names it."""
        _ = self.fs
        return "/".join([self._root, *parts])

    @property
    def _renames(self) -> bool:
        protocol = self.fs.protocol
        names = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return any(name in _RENAME_FS for name in names)

    @contextmanager
    def _errors(self, writing: bool = False) -> Iterator[None]:
        """Any failure of the store becomes a RemoteTierError naming the URL. A FileNotFoundError passes
        when reading (no such object); when `writing` it is a failure too (no such bucket...)."""
        try:
            yield
        except (RemoteTierError, ImportError):
            raise
        except FileNotFoundError as exc:
            if not writing and not _no_bucket(exc):  # no such object: the caller's matter
                raise
            raise _translate(self.url, exc) from exc  # no such bucket (a typo?): the tier is not there
        except Exception as exc:  # whatever the store's library raises (botocore, aiohttp...): the tier failed
            logger.debug("remote tier %s failed", self.url, exc_info=True)  # the traceback, for a bug report
            raise _translate(self.url, exc) from exc

    def _put_bytes(self, path: str, data: bytes) -> None:
        """Write one object whole: an object store's put is atomic; on a filesystem, a temp name renamed."""
        fs = self.fs
        with self._errors(writing=True):
            if self._renames:
                self._write_renamed(path, lambda tmp: fs.pipe_file(tmp, data))
            else:
                fs.pipe_file(path, data)

    def _write_renamed(self, path: str, write: Callable[[str], object]) -> None:
        """`write` a temporary name, renamed onto `path` (never into a folder standing there); removed on failure."""
        fs = self.fs
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            write(tmp)
            if fs.isdir(path):  # fs.mv would move the object into it, and report success
                raise IsADirectoryError(errno.EISDIR, "a folder stands where this object belongs", path)
            if self.local_folder() is not None:
                os.replace(tmp, path)  # atomic; refuses a folder at `path` too
            else:
                fs.mv(tmp, path)
        except BaseException:
            with suppress(Exception):
                fs.rm_file(tmp)  # the only thing provender ever deletes in a tier: its own temporary object
            raise

    def _read_bytes(self, path: str) -> bytes | None:
        with self._errors():
            try:
                return bytes(self.fs.cat_file(path))
            except FileNotFoundError as exc:
                if _no_bucket(exc):
                    raise
                return None

    def check_writable(self) -> None:
        """Refuse writes on a read-only tier; mark an empty tier with its format on first write."""
        if self.read_only:
            from provender.errors import RemoteNotConfiguredError

            raise RemoteNotConfiguredError(f"the remote tier {self.url} is read-only here (remote.read_only = true)")
        self.check_format()
        if not self._marked:
            marker = {"provender_tier": FORMAT, "created": time.time(), "layout": "blobs/sha256, entries/<key>"}
            self._put_bytes(self.path(MARKER), json.dumps(marker).encode())
            self._marked = True

    def check_format(self) -> None:
        """A tier written by a newer provender (another format) is refused, not misread (checked once)."""
        if self._checked:
            return
        raw = self._read_bytes(self.path(MARKER))
        self._checked = True
        if raw is None:
            return
        try:
            found = json.loads(raw).get("provender_tier")
        except (ValueError, AttributeError):
            found = None
        if found != FORMAT:
            self._checked = False
            raise RemoteTierError(self.url, f"{MARKER} says format {found!r}; this provender reads format {FORMAT}")
        self._marked = True

    # -- blobs -------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> str:
        if not _HEX64.fullmatch(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.path("blobs", "sha256", sha256)

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        """True if the tier holds this blob (with this size, when given)."""
        with self._errors():
            try:
                info = self.fs.info(self.blob_path(sha256))
            except FileNotFoundError as exc:
                if _no_bucket(exc):
                    raise
                return False
        return size is None or int(info.get("size") or 0) == size

    def put_blob(self, local_path: str, sha256: str) -> None:
        """Upload a local file as the blob `sha256` (the caller has checked that it hashes to it)."""
        fs, target = self.fs, self.blob_path(sha256)
        with self._errors(writing=True):
            if self._renames:
                self._write_renamed(target, lambda tmp: fs.put_file(local_path, tmp))
            else:
                fs.put_file(local_path, target)

    @contextmanager
    def open_blob(self, sha256: str) -> Iterator[IO[bytes]]:
        """The blob, open for reading (a FileNotFoundError if the tier has no such blob).

        Only the store's own failures become RemoteTierError: what the caller raises while
        reading (a full local disk...) passes unchanged."""
        # Each block is one ranged GET, and a request costs a fixed time on an object store: big
        # blocks (one in memory per blob being read) make a 100 MB blob 4 GETs, not 13 (moto, 100 MB:
        # 0.29 s against 0.74 s for 8 MiB blocks; one unranged GET with boto3 takes 0.10 s).
        block = 32 * CHUNK if self.scheme in S3_SCHEMES else 8 * CHUNK
        with self._errors():
            f = self.fs.open(self.blob_path(sha256), "rb", block_size=block)
        try:
            yield f
        finally:
            with suppress(Exception):
                f.close()

    def read_blob_chunks(self, f: IO[bytes]) -> Iterator[bytes]:
        """The blob's content in chunks (a failing read is a RemoteTierError)."""
        while True:
            with self._errors():
                chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk

    # -- manifests and refs ------------------------------------------------------------

    def put_manifest(self, manifest: dict[str, Any], refs: list[str]) -> str:
        """Write a snapshot's manifest (after its blobs), then point `refs` at it; returns its id."""
        self.check_writable()
        manifest = {
            **manifest,
            "format": FORMAT,
            "pushed_at": manifest.get("pushed_at") or time.time(),
            "pushed_by": manifest.get("pushed_by") or socket.gethostname(),
        }
        snap = snapshot_id(manifest)
        key = manifest["key"]
        self._put_bytes(self.path("entries", key, f"{snap}.json"), json.dumps(manifest, indent=1).encode())
        for ref in refs:
            self._put_bytes(self.path("entries", key, "refs", ref), snap.encode())
        return snap

    def read_manifest(self, key: str, ref: str) -> dict[str, Any] | None:
        """The manifest a ref points at, or None (no such ref, or no manifest where it points).

        A damaged ref or manifest (not JSON, another entry's, no file list) is a `TierContentError`:
        the tier answered with content that is not valid."""
        from provender.errors import TierContentError

        self.check_format()
        raw = self._read_bytes(self.path("entries", key, "refs", ref))
        if raw is None:
            return None
        snap = raw.decode(errors="replace").strip()
        if not _HEX64.fullmatch(snap):
            raise TierContentError(self.url, f"ref {key}/{ref} is damaged; ignored")
        try:
            return self._parse_manifest(key, self._read_bytes(self.path("entries", key, f"{snap}.json")))
        except ValueError as exc:
            raise TierContentError(self.url, f"manifest {key}/{snap} is {exc}; ignored") from None

    def refs(self, key: str) -> list[str]:
        """The names of an entry's refs (``main``, ``main@<patterns hash>``...), none if it has none."""
        self.check_format()
        with self._errors():
            try:
                found = self.fs.ls(self.path("entries", key, "refs"), detail=False)
            except FileNotFoundError as exc:
                if _no_bucket(exc):
                    raise
                return []
        return sorted(n for n in (str(p).rstrip("/").rsplit("/", 1)[-1] for p in found) if TMP_PREFIX not in n)

    @staticmethod
    def _parse_manifest(key: str, body: bytes | None) -> dict[str, Any] | None:
        """The manifest in `body` (None: no body); ValueError saying why if it is damaged or not valid."""
        if body is None:
            return None
        try:
            manifest = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, an integer of 5000 digits, or nested 10,000 deep
            raise ValueError("damaged (not JSON)") from None
        if not isinstance(manifest, dict) or manifest.get("key") != key or not isinstance(manifest.get("files"), list):
            raise ValueError("not valid (another entry's, or no file list)")
        return manifest

    # -- listing -----------------------------------------------------------------------

    def entries(self) -> list[RemoteEntry]:
        """What the tier holds: each entry's newest snapshot, by name. Raises RemoteTierError if unreachable."""
        self.check_format()
        base = self.path("entries")
        with self._errors():
            try:
                paths = self.fs.find(base)
            except FileNotFoundError:
                paths = []
            refs = [p for p in paths if p.rsplit("/", 2)[-2] == "refs" and TMP_PREFIX not in p]
            # every ref, then every manifest they name, each in one batch (concurrent requests on S3)
            snaps = {p: raw.decode(errors="replace").strip() for p, raw in self._cat_all(refs).items()}
            wanted = {f"{p.rsplit('/refs/', 1)[0]}/{snap}.json" for p, snap in snaps.items() if _HEX64.fullmatch(snap)}
            bodies = self._cat_all(sorted(wanted))
        newest: dict[str, RemoteEntry] = {}
        skipped: set[str] = set()
        for ref_path, snap in snaps.items():
            key, ref = ref_path[len(base) + 1 :].split("/")[0], ref_path.rsplit("/", 1)[1]
            if snap in skipped:  # said once, however many refs name it
                continue
            body = bodies.get(f"{ref_path.rsplit('/refs/', 1)[0]}/{snap}.json")
            try:  # a shared tier's content is not trusted: one damaged manifest is skipped, not the listing
                manifest = self._parse_manifest(key, body)
                entry = None if manifest is None else listed_entry(key, ref, manifest)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                logger.warning("remote tier %s: manifest %s/%s is not valid (%s); ignored", self.url, key, snap, exc)
                entry = None
            if entry is None:  # missing (a ref written before its manifest), damaged (said): skipped
                skipped.add(snap)
                continue
            old = newest.get(key)
            if old is None or rank(entry) > rank(old):
                newest[key] = entry
        return sorted(newest.values(), key=lambda e: (e.name.lower(), e.key))

    def _cat_all(self, paths: list[str]) -> dict[str, bytes]:
        """The content of each path that exists (one batch; a failure other than "not found" is raised)."""
        if not paths:
            return {}
        found = self.fs.cat(paths, on_error="return")
        for path, value in found.items():
            if isinstance(value, (IsADirectoryError, NotADirectoryError)):  # one damaged object: not the listing
                logger.warning("remote tier %s: %s is damaged (%s); ignored", self.url, path, value)
            elif isinstance(value, BaseException) and not isinstance(value, FileNotFoundError):
                raise value
        return {p: bytes(v) for p, v in found.items() if not isinstance(v, BaseException)}

    def size(self) -> int:
        """Bytes of all the blobs the tier holds (each stored once, however many entries share it)."""
        self.check_format()
        with self._errors():
            try:
                found = self.fs.find(self.path("blobs", "sha256"), detail=True)
            except FileNotFoundError:
                return 0
        return sum(int(info.get("size") or 0) for path, info in found.items() if TMP_PREFIX not in path)


def tier_from_settings(values: dict[str, Any] | None) -> RemoteTier | None:
    """The tier the ``[remote]`` settings describe (see `provender._wiring.remote_defaults`), or None."""
    if not values or not values.get("url"):
        return None
    options: dict[str, Any] = {}
    if values.get("endpoint_url") and str(values["url"]).lower().startswith(("s3://", "s3a://")):
        options["endpoint_url"] = values["endpoint_url"]
    return RemoteTier(
        values["url"],
        read_only=bool(values.get("read_only")),
        storage_options=options,
        timeout=float(values.get("timeout") or 30.0),
    )
