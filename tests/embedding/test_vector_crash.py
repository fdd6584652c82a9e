"""A collection survives SIGKILLs in the middle of adds and deletes (issue 24 item 1).

A child process works through a fixed plan of steps on one collection: adds of new items
(with some earlier items' vectors replaced in the same add) and deletes. It prints each step
number once the call has returned. The parent waits until the child is inside a write
transaction (SQLite's write lock is held: the vectors are being written, fsynced or committed),
lets a random few milliseconds pass, and SIGKILLs it; every other round it kills the child
the moment the lock is released instead (just after a commit, before the call returns).
Then it checks everything on disk: every
item of every step the child reported is there with exactly its vector and searchable, every
deleted item is gone and never returned, and the step in flight happened entirely or not at
all. Rounds on the same database until four kills landed in an add and four in a delete.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from provender_embedding import Collection

DIM = 64
BATCH = 5000  # new items per add (+ 2,500 replaced): one transaction (< PRECOMPUTED_CHUNK), long enough to kill in

CHILD = """
import sys
from provender_embedding import Collection
sys.path.insert(0, sys.argv[3])
from test_vector_crash import step_ops
coll = Collection("crash", db_path=sys.argv[1], dimension=DIM)
step = int(sys.argv[2])
while True:
    kind, ids, vectors = step_ops(step)
    if kind == "add":
        coll.add_many([{"id": i, "text": "t-" + i, "metadata": {"step": step}} for i in ids], embeddings=vectors)
    else:
        coll.delete_many(ids)
    print(step, flush=True)
    step += 1
""".replace("DIM", str(DIM))


def kind_of(step: int) -> str:
    return "delete" if step % 3 == 2 else "add"


def step_ops(step: int) -> tuple[str, list[str], np.ndarray | None]:
    """Step `step` of the plan: ``("add", ids, vectors)`` or ``("delete", ids, None)``.

    An add stores BATCH new items and replaces the vectors of the even items of the add three
    steps back; a delete removes the odd items of the add two steps back.
    """
    if kind_of(step) == "delete":
        return "delete", [f"s{step - 2}-{k}" for k in range(1, BATCH, 2)], None
    rng = np.random.default_rng(step)
    ids = [f"s{step}-{k}" for k in range(BATCH)]
    if step >= 3:
        ids += [f"s{step - 3}-{k}" for k in range(0, BATCH, 2)]
    return "add", ids, rng.standard_normal((len(ids), DIM)).astype(np.float32)


def apply(state: dict[str, tuple[int, int]], step: int) -> None:
    """The items after `step`: id -> (the step whose vectors it has, its row among them)."""
    kind, ids, _ = step_ops(step)
    for n, item_id in enumerate(ids):
        if kind == "add":
            state[item_id] = (step, n)
        else:
            state.pop(item_id, None)


def vector(step: int, row: int, cache: dict[int, np.ndarray]) -> np.ndarray:
    if step not in cache:
        matrix = step_ops(step)[2]
        assert matrix is not None
        cache[step] = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return cache[step][row]


def on_disk(db: Path) -> dict[str, np.ndarray]:
    """Every stored item's vector, read through a fresh Collection (as a new process would)."""
    coll = Collection("crash", db_path=db)
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, slot FROM items WHERE collection='crash'").fetchall()
    con.close()
    matrix = coll._matrix()
    found = {item_id: np.array(matrix[slot]) for item_id, slot in rows}
    coll.close()
    return found


def kill_during_a_write(db: Path, child: subprocess.Popen[str], rng: np.random.Generator, mode: str) -> None:
    """SIGKILL `child` inside a write transaction (a random few ms after it takes SQLite's write
    lock: writing, fsyncing or committing) or, `mode` "after", the moment that lock is released
    (just after the commit, while the call is still finishing)."""
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    locked = False
    try:
        while child.poll() is None:
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                if locked:  # mode "after": the child has just committed
                    os.kill(child.pid, signal.SIGKILL)
                    return
            except sqlite3.OperationalError:  # locked: the child is inside a write transaction
                locked = True
                if mode == "inside":
                    time.sleep(float(rng.uniform(0, 0.15)))
                    os.kill(child.pid, signal.SIGKILL)
                    return
            time.sleep(0.001)
    finally:
        probe.close()
    raise AssertionError(f"the child exited by itself: {child.returncode}")


def read_lines(child: subprocess.Popen[str], done: list[int]) -> None:
    assert child.stdout is not None
    done.extend(int(line) for line in child.stdout)


def test_sigkill_during_adds_and_deletes_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    Collection("crash", db_path=db, dimension=DIM).close()
    state: dict[str, tuple[int, int]] = {}
    ever: set[str] = set()
    cache: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(2026)
    next_step = 0
    killed_in: list[str] = []
    rounds = 0
    while min(killed_in.count("add"), killed_in.count("delete")) < 4:
        assert rounds < 20, killed_in  # a delete is short: a kill aimed at one may land in the next add
        target = "add" if killed_in.count("add") < 4 else "delete"
        mode = "inside" if rounds % 2 == 0 else "after"
        rounds += 1
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(next_step), str(Path(__file__).parent)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        done: list[int] = []
        reader = threading.Thread(target=read_lines, args=(child, done), daemon=True)
        reader.start()
        # let it finish steps until the one it is in is of the kind this round kills in
        while kind_of(done[-1] + 1 if done else next_step) != target:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            time.sleep(0.002)
        kill_during_a_write(db, child, rng, mode)
        child.wait()
        reader.join()
        assert child.returncode == -signal.SIGKILL
        for step in done:
            apply(state, step)
            ever.update(step_ops(step)[1])
        in_flight = done[-1] + 1 if done else next_step
        killed_in.append(kind_of(in_flight))
        after = dict(state)
        apply(after, in_flight)
        stored = on_disk(db)
        # the step in flight happened entirely or not at all: every vector is exactly one state's
        matches = [
            want
            for want in (state, after)
            if set(stored) == set(want)
            and all(np.allclose(stored[i], vector(*want[i], cache), atol=1e-6) for i in want)
        ]
        assert matches, f"step {in_flight} ({kind_of(in_flight)}) half-applied or an item corrupted"
        if matches[-1] is after:  # killed after its commit, before it printed
            state, next_step = after, in_flight + 1
            ever.update(step_ops(in_flight)[1])
        else:
            next_step = in_flight
        # searchable: a sample of live items find themselves; deleted ones are never returned
        coll = Collection("crash", db_path=db)
        for item_id in list(state)[:: max(1, len(state) // 40)]:
            hit = coll.similar_by_vector(vector(*state[item_id], cache), 1)[0]
            assert hit.id == item_id and hit.score > 0.9999
            assert hit.content == "t-" + item_id and hit.metadata == {"step": state[item_id][0]}
        for item_id in sorted(ever - set(state))[:20]:
            step, row = (int(part) for part in item_id[1:].split("-"))
            assert item_id not in {h.id for h in coll.similar_by_vector(vector(step, row, cache), 5)}
        assert coll.count() == len(state)
        coll.close()
