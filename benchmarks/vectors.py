"""Collections at scale (issue 24 item 1): provender-embedding's vectors against the numpy floor,
sqlite-vec and `llm similar`, from 10,000 to 1,000,000 384-dimensional unit vectors.

    python benchmarks/vectors.py                        # 10k, 100k, 1M; writes benchmarks/results-vectors.json
    python benchmarks/vectors.py --sizes 10000,100000   # smaller
    python benchmarks/vectors.py --llm /path/to/venv/bin/python   # adds `llm similar` at 100k (llm installed there)

Needs provender-embedding with the ``ann`` extra (usearch), and for the comparison
``sqlite-vec`` and ``pysqlite3-binary`` (this machine's Python sqlite3 cannot load extensions).
The vectors are clustered (1,000 centres plus noise, then normalised) as real embeddings are, so
that the approximate index's recall means something; queries come from the same distribution.

Measured per size:
- first query in a new process: from ``Collection(name)`` to the answer, provender_embedding and
  numpy already imported, page cache warm (one untimed run first); median of 5 processes;
- warm query (same process) against the floor: numpy's matrix-vector product and top-10 selection
  on the same matrix in memory, the two timed in turn on the same queries, medians of 30 (15 at 1M);
- a query with a metadata filter (``where={"g": 3}``, a tenth of the items);
- adding 100,000 precomputed vectors to the collection;
- the approximate index (usearch HNSW): build, recall@10 against exact search, query time;
- sqlite-vec (vec0, cosine, brute force as it does): insert, first query in a new process, warm query.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384
HERE = Path(__file__).parent


def make_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((1000, DIM), dtype=np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = centres[rng.integers(0, 1000, stop - start)]
        block += 0.6 * rng.standard_normal((stop - start, DIM), dtype=np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def floor_top(matrix: np.ndarray, query: np.ndarray, k: int = 10) -> np.ndarray:
    scores = matrix @ query
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best])]  # type: ignore[no-any-return]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


FIRST_QUERY = """
import json, sys, time, resource
import numpy as np
from provender_embedding._collection import Collection
query = np.load(sys.argv[3])
t0 = time.perf_counter(); c0 = time.process_time()
hits = Collection(sys.argv[2], db_path=sys.argv[1]).similar_by_vector(query, 10, approximate=sys.argv[4] == "1")
t1 = time.perf_counter(); c1 = time.process_time()
print(json.dumps({"wall": t1 - t0, "cpu": c1 - c0, "top": hits[0].id}))
"""

SQLITE_VEC_FIRST = """
import json, sys, time
import numpy as np
import pysqlite3.dbapi2 as sqlite3, sqlite_vec
query = np.load(sys.argv[2])
t0 = time.perf_counter(); c0 = time.process_time()
con = sqlite3.connect(sys.argv[1]); con.enable_load_extension(True); sqlite_vec.load(con)
rows = con.execute("SELECT rowid, distance FROM v WHERE embedding MATCH ? AND k = 10", (query.tobytes(),)).fetchall()
t1 = time.perf_counter(); c1 = time.process_time()
print(json.dumps({"wall": t1 - t0, "cpu": c1 - c0, "top": rows[0][0]}))
"""


def run_json(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def first_query(args: list[str], runs: int = 5) -> dict[str, Any]:
    run_json(args)  # page cache warm
    results = [run_json(args) for _ in range(runs)]
    return {
        "wall_ms": ms(statistics.median(r["wall"] for r in results)),
        "cpu_ms": ms(statistics.median(r["cpu"] for r in results)),
        "runs_ms": [ms(r["wall"]) for r in results],
    }


def bench_provender(n: int, vectors: np.ndarray, queries: np.ndarray, work: Path, ann: bool) -> dict[str, Any]:
    from provender_embedding import Collection

    db = work / "provender.db"
    name = f"c{n}"
    row: dict[str, Any] = {}
    coll = Collection(name, dimension=DIM, db_path=db)
    t = time.perf_counter()
    coll.add_many(
        ({"id": str(i), "text": f"document {i}", "metadata": {"g": i % 10}} for i in range(n)), embeddings=vectors
    )
    row["build_s"] = round(time.perf_counter() - t, 2)
    coll.close()
    qfile = work / "q.npy"
    np.save(qfile, queries[0])
    row["first_query"] = first_query([sys.executable, "-c", FIRST_QUERY, str(db), name, str(qfile), "0"])
    # warm: provender and the numpy floor in turn, on the same queries
    coll = Collection(name, db_path=db)
    coll.similar_by_vector(queries[0], 10)
    floor = np.array(vectors)  # in memory
    ours, theirs, same = [], [], 0
    rounds = 30 if n < 1_000_000 else 15
    for q in queries[:rounds]:
        t = time.perf_counter()
        hits = coll.similar_by_vector(q, 10)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        best = floor_top(floor, q)
        theirs.append(time.perf_counter() - t)
        same += [h.id for h in hits] == [str(i) for i in best]
    row["warm_ms"] = ms(statistics.median(ours))
    row["floor_ms"] = ms(statistics.median(theirs))
    row["warm_over_floor"] = round(statistics.median(ours) / statistics.median(theirs), 2)
    row["results_equal_numpy"] = f"{same}/{rounds}"
    del floor
    filtered = []
    for q in queries[: 5 if n < 1_000_000 else 2]:
        t = time.perf_counter()
        coll.similar_by_vector(q, 10, where={"g": 3})
        filtered.append(time.perf_counter() - t)
    row["filtered_ms"] = ms(statistics.median(filtered))
    if ann:
        t = time.perf_counter()
        coll.similar_by_vector(queries[0], 10, approximate=True)  # builds the index
        row["ann_build_s"] = round(time.perf_counter() - t, 1)
        hits_at_10, times = [], []
        exact = Collection(name, db_path=db)
        for q in queries:
            truth = {h.id for h in exact.similar_by_vector(q, 10)}
            t = time.perf_counter()
            found = coll.similar_by_vector(q, 10, approximate=True)
            times.append(time.perf_counter() - t)
            hits_at_10.append(len(truth & {h.id for h in found}) / 10)
        row["ann_recall_at_10"] = round(float(np.mean(hits_at_10)), 4)
        row["ann_query_ms"] = ms(statistics.median(times))
        row["ann_first_query"] = first_query([sys.executable, "-c", FIRST_QUERY, str(db), name, str(qfile), "1"], 3)
    extra = make_vectors(100_000, seed=n + 1)
    t = time.perf_counter()
    coll.add_many(({"id": f"x{i}", "metadata": {"g": i % 10}} for i in range(100_000)), embeddings=extra)
    row["add_100k_s"] = round(time.perf_counter() - t, 2)
    row["disk_mb"] = round(sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) / 1e6)
    coll.close()
    return row


def bench_sqlite_vec(n: int, vectors: np.ndarray, queries: np.ndarray, work: Path) -> dict[str, Any] | None:
    try:
        import pysqlite3.dbapi2 as sqlite3  # the stdlib's cannot load extensions here
        import sqlite_vec
    except ImportError:
        return None
    db = work / "sqlite-vec.db"
    con = sqlite3.connect(db)
    con.enable_load_extension(True)
    sqlite_vec.load(con)
    con.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}] distance_metric=cosine)")
    t = time.perf_counter()
    for start in range(0, n, 10_000):
        con.executemany(
            "INSERT INTO v(rowid, embedding) VALUES (?, ?)",
            ((start + i, vectors[start + i].tobytes()) for i in range(min(10_000, n - start))),
        )
        con.commit()
    row: dict[str, Any] = {"build_s": round(time.perf_counter() - t, 2), "version": sqlite_vec.__version__}
    qfile = work / "q.npy"
    np.save(qfile, queries[0])
    row["first_query"] = first_query([sys.executable, "-c", SQLITE_VEC_FIRST, str(db), str(qfile)])
    sql = "SELECT rowid, distance FROM v WHERE embedding MATCH ? AND k = 10"
    con.execute(sql, (queries[0].tobytes(),)).fetchall()
    times, same = [], 0
    rounds = 10 if n < 1_000_000 else 5
    for q in queries[:rounds]:
        t = time.perf_counter()
        rows = con.execute(sql, (q.tobytes(),)).fetchall()
        times.append(time.perf_counter() - t)
        same += [r[0] for r in rows] == floor_top(vectors, q).tolist()
    row["warm_ms"] = ms(statistics.median(times))
    row["results_equal_numpy"] = f"{same}/{rounds}"
    con.close()
    return row


LLM_BUILD = """
import sys, numpy as np, sqlite_utils, llm, time
from llm.embeddings_migrations import embeddings_migrations
db = sqlite_utils.Database(sys.argv[1]); embeddings_migrations.apply(db)
db["collections"].insert({"id": 1, "name": "bench", "model": "bench-model"})
vectors = np.load(sys.argv[2])
db["embeddings"].insert_all(
    ({"collection_id": 1, "id": str(i), "embedding": llm.encode(v.tolist()), "content": f"document {i}",
      "content_hash": None, "metadata": None, "updated": 0} for i, v in enumerate(vectors)), batch_size=10000)
c = llm.Collection("bench", db, create=False)
t = time.perf_counter(); c.similar_by_id("0", 10); print(time.perf_counter() - t)
"""


def bench_llm(python: str, vectors: np.ndarray, work: Path) -> dict[str, Any]:
    """`llm similar COLLECTION ID` (brute force in Python) as a process, and the same in provender."""
    db, vfile = work / "llm.db", work / "v.npy"
    np.save(vfile, vectors)
    out = subprocess.run([python, "-c", LLM_BUILD, str(db), str(vfile)], capture_output=True, text=True, check=True)
    in_process = float(out.stdout.strip().splitlines()[-1])
    llm_bin = str(Path(python).parent / "llm")
    cmd = [llm_bin, "similar", "bench", "0", "-n", "10", "-d", str(db)]
    subprocess.run(cmd, capture_output=True, check=True)
    walls = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        walls.append(time.perf_counter() - t)
    version = subprocess.run([llm_bin, "--version"], capture_output=True, text=True).stdout.strip()
    return {"version": version, "process_ms": ms(statistics.median(walls)), "in_process_ms": ms(in_process)}


PROVENDER_BY_ID = """
import sys
from provender_embedding import Collection
print(Collection(sys.argv[2], db_path=sys.argv[1]).similar_by_id("0", 10)[0].id)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--ann-max", type=int, default=1_000_000, help="largest size to build the HNSW index at")
    parser.add_argument("--llm", metavar="PYTHON", help="a Python with `llm` installed: adds `llm similar` at 100k")
    parser.add_argument("--out", type=Path, default=HERE / "results-vectors.json")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_start": os.getloadavg(),
        "sizes": {},
    }
    queries = make_vectors(100, seed=99)
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"vectors-{n}-", dir=args.workdir))
        try:
            vectors = make_vectors(n, seed=n)
            entry: dict[str, Any] = {"provender": bench_provender(n, vectors, queries, work, n <= args.ann_max)}
            entry["sqlite_vec"] = bench_sqlite_vec(n, vectors, queries, work)
            if args.llm and n == 100_000:
                entry["llm"] = bench_llm(args.llm, vectors, work)
                cmd = [sys.executable, "-c", PROVENDER_BY_ID, str(work / "provender.db"), f"c{n}"]
                walls = []
                for attempt in range(4):
                    t0 = time.perf_counter()
                    subprocess.run(cmd, capture_output=True, check=True)
                    if attempt:  # the first run warms the page cache
                        walls.append(time.perf_counter() - t0)
                entry["provender_by_id_process_ms"] = ms(statistics.median(walls))
            results["sizes"][str(n)] = entry
            print(json.dumps({n: entry}, indent=1), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
