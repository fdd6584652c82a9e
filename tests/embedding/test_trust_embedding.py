"""Issue 9 for embeddings: texts without ids never overwrite each other (item 2), bad
settings and names get the documented exit codes (items 4 and 9), and `collections ls
--json` dates are ISO 8601 (item 12). The real all-MiniLM-L6-v2, real processes."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from helpers import run_cli
from provender_embedding import Collection

QUIET = {"PROVENDER_QUIET_PLUGIN_ERRORS": "1"}


def contents(name: str) -> set[str]:
    coll = Collection(name)
    ids = [row[0] for row in coll._con.execute("SELECT id FROM items WHERE collection=?", (name,))]
    return {coll.get(i)["content"] for i in ids}  # type: ignore[index]


def test_texts_without_ids_never_overwrite_each_other(minilm: str, tmp_path: Path) -> None:
    first = run_cli("embed", "-m", minilm, "-c", "notes", "The first note.", env=QUIET)
    assert first.returncode == 0 and "1 added, 0 updated" in first.stderr, first
    second = run_cli("embed", "-m", minilm, "-c", "notes", "A second, different note.", env=QUIET)
    assert second.returncode == 0 and "1 added, 0 updated" in second.stderr, second
    assert contents("notes") == {"The first note.", "A second, different note."}
    again = run_cli("embed", "-m", minilm, "-c", "notes", "The first note.", env=QUIET)
    assert "0 added, 0 updated, 1 unchanged (now 2 items)" in again.stderr  # the same text is stored once
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("alpha line one\nalpha line two\n")
    b.write_text("beta line one\n")
    assert run_cli("embed", "-m", minilm, "-c", "files", "-i", str(a), env=QUIET).returncode == 0
    from_b = run_cli("embed", "-m", minilm, "-c", "files", "-i", str(b), env=QUIET)
    assert "1 added, 0 updated" in from_b.stderr, from_b
    assert contents("files") == {"alpha line one", "alpha line two", "beta line one"}
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "gamma without an id"}\n')
    assert run_cli("embed", "-m", minilm, "-c", "files", "-i", str(jsonl), env=QUIET).returncode == 0
    assert len(contents("files")) == 4


def test_an_item_is_updated_only_when_its_id_is_named(minilm: str) -> None:
    coll = Collection("api", minilm)
    first = coll.add_many(["one text", {"text": "two text"}, (None, "three text")])
    assert (first.added, first.updated) == (3, 0) and len(set(first.ids)) == 3
    assert coll.add_many(["four text"]).added == 1 and coll.count() == 4
    named = coll.add_many([{"id": first.ids[0], "text": "one text, edited"}])
    assert (named.added, named.updated) == (0, 1)
    assert coll.get(first.ids[0])["content"] == "one text, edited"  # type: ignore[index]
    twice = coll.add_many(["five text", "five text"])
    assert (twice.added, twice.unchanged, coll.count()) == (1, 1, 5)


def test_collections_ls_json_dates_are_iso_8601(minilm: str) -> None:
    Collection("dated", minilm)
    [row] = json.loads(run_cli("collections", "ls", "--json", env=QUIET).stdout)
    created = datetime.datetime.fromisoformat(row["created"])
    assert created.tzinfo is not None and abs((datetime.datetime.now(datetime.UTC) - created).total_seconds()) < 600
    assert Collection.list()[0]["created"] == row["created"]


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (["embed", "-m", "me/my-model", "x"], {"PROVENDER_MEMORY__KEEP_ALIVE": "abc"}, 2, "memory.keep_alive"),
        (["embed", "-m", "", "x"], {}, 2, "invalid model name ''"),
        (["embed", "-m", "./no-such-model", "x"], {}, 2, "no such file or directory"),
        (["embed", "-m", "org/not-cached", "x"], {}, 1, "not in the cache"),
        (["similar", "nocoll", "q"], {}, 1, "no collection named 'nocoll'"),
        (["collections", "rm", "nocoll", "-y"], {}, 1, "no collection named 'nocoll'"),
    ],
)
def test_exit_codes_as_documented(minilm: str, args: list[str], env: dict[str, str], code: int, needle: str) -> None:
    out = run_cli(*args, env={**QUIET, **env})
    assert out.returncode == code, out
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in out.stderr
    assert "give a model to create it" not in out.stderr
    if "similar" in args:
        from provender_embedding import CollectionNotFoundError

        with pytest.raises(CollectionNotFoundError):
            Collection("nocoll")
        assert not Collection.exists("nocoll")  # looking did not create it
