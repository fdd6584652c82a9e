"""Corpora embedded on a real local Ray instance: exact vectors, each row once, a killed worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import run_cli

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ATOL = 1e-5  # batch composition changes the float sums only in the last bits (measured ~2e-7)


def _actor_pids() -> set[int]:
    """Live processes of our embedding actors (Ray titles them after the UDF class)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if b"EmbedBatches" in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _check_complete(rows: dict[str, list[Any]], corpus: list[dict[str, Any]], reference: np.ndarray) -> None:
    """Every input row exactly once, its columns intact, its vector the single-process one."""
    ids = rows["id"]
    assert len(ids) == len(corpus) and sorted(ids) == list(range(len(corpus)))
    order = np.argsort(np.asarray(ids))
    for column in ("text", "source"):
        assert [rows[column][i] for i in order] == [row[column] for row in corpus]
    vectors = np.asarray([rows["embedding"][i] for i in order], dtype=np.float32)
    assert vectors.shape == reference.shape == (len(corpus), 384)
    assert np.allclose(vectors, reference, rtol=0, atol=ATOL), np.abs(vectors - reference).max()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def _collect(batches: Any) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {"id": [], "text": [], "source": [], "embedding": []}
    for batch in batches:
        for column in rows:
            rows[column].extend(batch.column(column).to_pylist())
    return rows


def test_embed_dataset_equals_single_process_embedder(
    ray_cluster: Any, worker_home: Path, corpus: list[dict[str, Any]], reference: np.ndarray
) -> None:
    from provender import CacheManager
    from provender_embedding import embed_dataset

    node_cache = CacheManager(cache_dir=worker_home / "cache", max_size=10**10)
    hits = node_cache.stats().hits
    dataset = ray_cluster.data.from_items(corpus, override_num_blocks=8)
    out = embed_dataset(dataset, MODEL, provider="transformers", concurrency=2, batch_size=250)
    table = out.to_arrow_refs()
    tables = ray_cluster.get(table)
    rows = _collect(tables)
    _check_complete(rows, corpus, reference)
    schema = tables[0].schema
    assert schema.names == ["id", "text", "source", "embedding"]
    assert str(schema.field("embedding").type) == "fixed_size_list<item: float>[384]"
    assert node_cache.stats().hits >= hits + 2  # each of the 2 actors took the model from the node's cache


def test_a_killed_worker_is_retried_and_every_row_comes_out_once(
    ray_cluster: Any, corpus: list[dict[str, Any]], reference: np.ndarray
) -> None:
    from provender_embedding import embed_dataset

    dataset = ray_cluster.data.from_items(corpus, override_num_blocks=40)
    out = embed_dataset(dataset, MODEL, provider="transformers", concurrency=2, batch_size=50)
    killed: int | None = None
    batches = []
    for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
        batches.append(batch)
        if killed is None:  # mid-run: the first batch is out, 1,950 rows are not
            assert sum(b.num_rows for b in batches) < len(corpus) // 2
            pids = _actor_pids()
            assert pids, "no embedding actor process found"
            killed = min(pids)
            os.kill(killed, signal.SIGKILL)
    assert killed is not None and not _alive(killed)
    _check_complete(_collect(batches), corpus, reference)


def test_a_node_whose_cache_lacks_the_model_pulls_it_from_the_remote_tier(
    ray_cluster: Any, worker_home: Path, corpus: list[dict[str, Any]], reference: np.ndarray, tmp_path: Path
) -> None:
    """Actors on a node with an empty cache and the tier set: the model comes from the tier, no Hub."""
    from provender import CacheManager
    from provender_embedding import embed_dataset

    (tmp_path / "tier").mkdir()
    tier = (tmp_path / "tier").as_uri()
    CacheManager(cache_dir=worker_home / "cache", max_size=10**10, remote=tier).push(MODEL)
    node = tmp_path / "node-cache"
    env = {"PROVENDER_CACHE__DIR": str(node), "PROVENDER_REMOTE__URL": tier, "HF_HUB_OFFLINE": "1"}
    rows = corpus[:100]
    dataset = ray_cluster.data.from_items(rows, override_num_blocks=2)
    out = embed_dataset(
        dataset, MODEL, provider="transformers", concurrency=1, ray_remote_args={"runtime_env": {"env_vars": env}}
    )
    result = _collect(ray_cluster.get(out.to_arrow_refs()))
    _check_complete(result, rows, reference[:100])
    local = CacheManager(cache_dir=node, max_size=10**10, remote=None)
    assert local.find(MODEL) is not None  # the node's cache holds it now
    assert local.stats().remote_hits >= 1


def test_a_row_without_a_text_fails_the_run_naming_the_column(ray_cluster: Any) -> None:
    """Not retried, not embedded as something else: the run stops with the reason."""
    from provender_embedding import embed_dataset

    dataset = ray_cluster.data.from_items([{"text": "a text"}, {"text": None}], override_num_blocks=1)
    out = embed_dataset(dataset, MODEL, provider="transformers", concurrency=1)
    with pytest.raises(Exception) as info:
        out.take_all()
    chain, error = [], info.value
    while error is not None and len(chain) < 10:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("column 'text' holds a NoneType" in text for text in chain), chain


def test_a_text_column_that_is_missing_is_a_clear_error(ray_cluster: Any) -> None:
    from provender import InvalidOptionError
    from provender_embedding import embed_dataset

    dataset = ray_cluster.data.from_items([{"body": "a text"}])
    with pytest.raises(InvalidOptionError, match=r"text_column.*it has body"):
        embed_dataset(dataset, MODEL)
    with pytest.raises(InvalidOptionError, match="output_column"):
        embed_dataset(dataset, MODEL, text_column="body", output_column="body")
    with pytest.raises(InvalidOptionError, match="concurrency"):
        embed_dataset(dataset, MODEL, text_column="body", concurrency=0)


def _write_corpus(path: Path, corpus: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [r["id"] for r in corpus], "body": [r["text"] for r in corpus]})
    table = table.append_column("source", pa.array([r["source"] for r in corpus]))
    pq.write_table(table, path)


def test_cli_joins_the_cluster_and_writes_every_column_in_order(
    ray_cluster: Any, node_cache: str, corpus: list[dict[str, Any]], reference: np.ndarray, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    corpus, reference = corpus[:500], reference[:500]  # the exactness on 2,000 rows is checked above
    source = tmp_path / "corpus.parquet"
    _write_corpus(source, corpus)
    target = tmp_path / "vectors.parquet"
    address = ray_cluster.get_runtime_context().gcs_address
    out = run_cli(
        "embed", "--ray", address, "-m", MODEL, "-i", str(source), "-o", str(target),
        "--text-column", "body", "--concurrency", "2", timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "500 texts" in out.stderr
    table = pq.read_table(target)
    assert table.column_names == ["id", "body", "source", "embedding"]
    assert table.column("id").to_pylist() == list(range(len(corpus)))  # row i is input row i
    assert table.column("body").to_pylist() == [r["text"] for r in corpus]
    vectors = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.allclose(vectors, reference, rtol=0, atol=ATOL)
    assert not list(tmp_path.glob(".*partial"))


def test_cli_a_worker_that_cannot_get_the_model_is_one_line(
    ray_cluster: Any, node_cache: str, corpus: list[dict[str, Any]], tmp_path: Path
) -> None:
    """On a cluster the model is resolved by the workers: their failure ends the run, exit 1, one line."""
    source = tmp_path / "corpus.parquet"
    _write_corpus(source, corpus[:20])
    address = ray_cluster.get_runtime_context().gcs_address
    args = ["embed", "--ray", address, "-m", "org/not-cached", "-i", str(source), "-o", str(tmp_path / "o.parquet")]
    out = run_cli(*args, "--text-column", "body", timeout=180)
    assert out.returncode == 1, out
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "org/not-cached" in errors[0] and "not in the cache" in errors[0], out.stderr
    assert "Traceback" not in out.stderr and "ERROR" not in out.stderr and 'File "' not in out.stderr, out.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_cli_starts_a_local_instance_for_jsonl(node_cache: str, reference: np.ndarray, tmp_path: Path) -> None:
    """`--ray` without an address: a Ray instance of its own, gone when the command ends."""
    import pyarrow.parquet as pq

    source = tmp_path / "corpus.jsonl"
    texts = ["the cat sat on a mat", "", "stock markets fell in paris"]
    source.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    target = tmp_path / "out.parquet"
    before = _actor_pids()
    out = run_cli("embed", "--ray", "-m", MODEL, "-i", str(source), "-o", str(target), "--num-cpus", "1", timeout=240)
    assert out.returncode == 0, out.stderr
    table = pq.read_table(target)
    assert table.column_names == ["text", "n", "embedding"]
    assert table.column("n").to_pylist() == [0, 1, 2]
    vectors = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    from provender_embedding import Embedder

    assert np.allclose(vectors, Embedder(f"transformers:{MODEL}").embed(texts), rtol=0, atol=ATOL)
    deadline = time.monotonic() + 30
    while _actor_pids() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _actor_pids() - before, "the command left Ray actors running"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


IO = ["-i", "{corpus}", "-o", "{tmp}/o.parquet"]
BODY = [*IO, "--text-column", "body"]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["-i", "{corpus}"], 2, "--ray needs -o"),
        ([*IO, "--text-column", "text"], 2, "no column 'text' (it has id, body, source)"),
        ([*BODY, "--vector-column", "id"], 2, "already has a column 'id'"),
        ([*IO, "-c", "notes"], 2, "drop -c"),
        (["-i", "{tmp}/nothing.parquet", "-o", "{tmp}/o.parquet"], 2, "does not exist"),
        (["-i", "{tmp}/corpus.txt", "-o", "{tmp}/o.parquet"], 2, "use a .parquet, .csv or .jsonl file"),
        (["-i", "{corpus}", "-o", "{tmp}/o.npy"], 2, "write a .parquet file or a folder"),
        (["some", "text", "-o", "{tmp}/o.parquet"], 2, "not TEXT arguments"),
        (["-i", "{tmp}/broken.parquet", "-o", "{tmp}/o.parquet"], 2, "cannot read"),
        ([*BODY, "--ray", "127.0.0.1:{port}"], 1, "cannot reach the Ray cluster"),
        ([*BODY, "--ray", "not-an-address"], 2, "not a Ray address"),
        ([*BODY, "--ray", "ray://127.0.0.1:{port}"], 2, "Ray Data does not run through Ray Client"),
        ([*BODY, "-m", "org/not-cached"], 1, "not in the cache"),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_line_before_ray_starts(
    node_cache: str, tmp_path: Path, corpus: list[dict[str, Any]], args: list[str], code: int, needle: str
) -> None:
    _write_corpus(tmp_path / "corpus.parquet", corpus[:10])
    (tmp_path / "corpus.txt").write_text("a\n")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    values = {"corpus": str(tmp_path / "corpus.parquet"), "tmp": str(tmp_path), "port": str(_free_port())}
    args = [a.format(**values) for a in args]
    if "--ray" not in args:
        args = ["--ray", *args]
    if "-m" not in args:
        args += ["-m", MODEL]
    started = time.monotonic()
    out = run_cli("embed", *args, timeout=60)
    assert out.returncode == code, out
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 30  # no Ray instance was started, nothing waited on
    assert not (tmp_path / "o.parquet").exists()


def test_ray_options_need_ray(node_cache: str) -> None:
    out = run_cli("embed", "-m", MODEL, "--text-column", "body", "a text")
    assert out.returncode == 2 and "--text-column applies to --ray only" in out.stderr


def test_ray_is_imported_only_when_used(tmp_path: Path) -> None:
    """`import provender_embedding` and `provender --help` leave ray alone; without ray, the hint."""
    code = (
        "import sys, provender_embedding\n"
        "from provender._cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "sys.modules['ray'] = None  # as if ray were not installed\n"
        "try:\n    provender_embedding.embed_dataset(None, 'm')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "provender-embedding[ray]"' in out.stdout
