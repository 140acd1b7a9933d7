"""PartsTable / read_table: append-only Parquet parts read back as one table, deduplicated by key."""

import math
import random
import shutil
import statistics
import time
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from hier_tl.results.tables import PartsTable, read_table

KEY = ("trial_id", "epoch")


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def fs():
    return pafs.LocalFileSystem()


def table(fs, root, **kw) -> PartsTable:
    return PartsTable(fs, str(root), "epochs", KEY, **{"flush_rows": 10**9, "flush_seconds": math.inf, **kw})


def read(fs, root) -> pd.DataFrame:
    return read_table(fs, str(root), "epochs", KEY)


def canon(df: pd.DataFrame) -> list[tuple]:
    """Order-insensitive comparable form: sorted rows of (column, value) with NaN as None."""
    cols = sorted(df.columns)
    rows = [tuple((c, None if isinstance(r[c], float) and math.isnan(r[c]) else r[c]) for c in cols)
            for r in df.to_dict("records")]
    return sorted(rows, key=repr)


def expected(rows: list[dict]) -> dict:
    last = {}
    for r in rows:
        last[(r["trial_id"], r["epoch"])] = r
    return last


def part_files(root) -> list:
    return sorted(p.name for p in (root / "epochs").iterdir() if not p.name.startswith("."))


def test_rows_read_back_with_last_row_per_key(fs, tmp_path):
    rng = random.Random(5)
    t, written = table(fs, tmp_path), []
    for _ in range(30):
        rows = [{"trial_id": f"t{rng.randrange(5)}", "epoch": rng.randrange(8), "acc": rng.random(),
                 "n": rng.randrange(100)} for _ in range(rng.randint(1, 20))]
        t.append(rows)
        written += rows
        if rng.random() < 0.5:
            t.flush()
    t.flush()
    df = read(fs, tmp_path)
    want = expected(written)
    assert len(df) == len(want)
    for r in df.to_dict("records"):
        assert r == want[(r["trial_id"], r["epoch"])]


def test_nothing_written_reads_empty(fs, tmp_path):
    assert read(fs, tmp_path).empty
    table(fs, tmp_path).flush()
    assert read(fs, tmp_path).empty and part_files(tmp_path) == []


def test_schema_grows_across_parts(fs, tmp_path):
    t = table(fs, tmp_path)
    t.append([{"trial_id": "a", "epoch": 1, "acc": 1, "tag": None}])
    t.flush()
    t.append([{"trial_id": "a", "epoch": 2, "acc": 0.5, "loss": 2.0, "tag": "x"}])
    t.flush()
    t.append([{"trial_id": "b", "epoch": 1, "acc": None, "loss": 1.5}])
    t.flush()
    df = read(fs, tmp_path).sort_values(["trial_id", "epoch"])
    assert list(df["acc"].iloc[:2]) == [1.0, 0.5] and math.isnan(df["acc"].iloc[2])
    assert math.isnan(df["loss"].iloc[0]) and list(df["loss"].iloc[1:]) == [2.0, 1.5]
    assert [None if pd.isna(v) else v for v in df["tag"]] == [None, "x", None]


def test_incompatible_types_across_parts_still_read(fs, tmp_path):
    t = table(fs, tmp_path)
    t.append([{"trial_id": "a", "epoch": 1, "threshold": 0.5}])
    t.flush()
    t.append([{"trial_id": "a", "epoch": 2, "threshold": "auto"}])
    t.flush()
    df = read(fs, tmp_path).sort_values("epoch")
    assert list(df["threshold"]) == [0.5, "auto"]


def test_mixed_types_in_one_part_stored_as_text(fs, tmp_path):
    t = table(fs, tmp_path)
    t.append([{"trial_id": "a", "epoch": 1, "threshold": 0.5}, {"trial_id": "a", "epoch": 2, "threshold": "auto"}])
    with pytest.warns(UserWarning, match="threshold"):
        t.flush()
    assert sorted(read(fs, tmp_path)["threshold"]) == ["0.5", "auto"]


def test_rows_without_key_rejected(fs, tmp_path):
    with pytest.raises(ValueError):
        table(fs, tmp_path).append([{"trial_id": "a"}])


def test_unreadable_part_skipped_with_warning(fs, tmp_path):
    t = table(fs, tmp_path)
    t.append([{"trial_id": "a", "epoch": e, "acc": e} for e in range(5)])
    t.flush()
    good = (tmp_path / "epochs" / part_files(tmp_path)[0]).read_bytes()
    t.append([{"trial_id": "b", "epoch": 1, "acc": 1}])
    t.flush()
    (tmp_path / "epochs" / "part-ffffffffffffffff-000001.parquet").write_bytes(b"garbage, not parquet")
    (tmp_path / "epochs" / "part-ffffffffffffffff-000002.parquet").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning) as caught:
        df = read(fs, tmp_path)
    text = " ".join(str(w.message) for w in caught)
    assert "part-ffffffffffffffff-000001.parquet" in text and "part-ffffffffffffffff-000002.parquet" in text
    assert sorted(zip(df["trial_id"], df["epoch"])) == [("a", e) for e in range(5)] + [("b", 1)]


def _parquet_bytes(cols: dict) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue().to_pybytes()


# A part file no writer of this table made: (its bytes from a good part's, text of its one-line warning)
BAD_PARTS = {
    "garbage": (lambda good: b"garbage, not parquet", "unreadable Parquet part skipped"),
    "empty": (lambda good: b"", "unreadable Parquet part skipped"),
    "truncated": (lambda good: good[: len(good) // 2], "unreadable Parquet part skipped"),
    "other_columns": (lambda good: _parquet_bytes({"a": [1], "b": ["x"]}), "no trial_id, epoch column"),
    "half_the_key": (lambda good: _parquet_bytes({"trial_id": ["z"], "acc": [1.0]}), "no epoch column"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARTS))
def test_a_damaged_or_foreign_part_is_skipped_with_one_line_naming_it(fs, tmp_path, case):
    t = table(fs, tmp_path)
    t.append([{"trial_id": "a", "epoch": e, "acc": e} for e in range(3)])
    t.flush()
    good = (tmp_path / "epochs" / part_files(tmp_path)[0]).read_bytes()
    make, needle = BAD_PARTS[case]
    bad = tmp_path / "epochs" / "part-ffffffffffffffff-000001.parquet"
    bad.write_bytes(make(good))
    for read_it in (lambda: read(fs, tmp_path), t.compact, lambda: read(fs, tmp_path)):  # compaction leaves it
        with pytest.warns(UserWarning) as caught:
            df = read_it()
        assert len(caught) == 1 and needle in str(caught[0].message) and str(bad) in str(caught[0].message)
        assert "\n" not in str(caught[0].message)
    assert bad.exists() and sorted(df.epoch) == [0, 1, 2]


def test_temporary_files_ignored(fs, tmp_path):
    t = table(fs, tmp_path)
    t.append([{"trial_id": "a", "epoch": 1, "acc": 1}])
    t.flush()
    (tmp_path / "epochs" / ".part-0000-000009.parquet.1a2b.tmp").write_bytes(b"half written")
    (tmp_path / "epochs" / ".part-0000-000010.parquet").write_bytes(b"half written")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = read(fs, tmp_path)
    assert len(df) == 1


def test_parts_are_written_atomically(fs, tmp_path):
    """No temporary file is left behind, and every file is a complete part."""
    t = table(fs, tmp_path, flush_rows=3)
    t.append([{"trial_id": "a", "epoch": e} for e in range(10)])
    assert [p.name for p in (tmp_path / "epochs").iterdir() if p.name.startswith(".")] == []
    assert part_files(tmp_path) == [f"part-{t.writer}-000001.parquet"]


def test_legacy_single_file(fs, tmp_path):
    pd.DataFrame([{"trial_id": "a", "epoch": 1, "acc": 0.1}, {"trial_id": "a", "epoch": 2, "acc": 0.2}]).to_parquet(
        tmp_path / "epochs.parquet")
    assert canon(read(fs, tmp_path)) == canon(pd.DataFrame([{"trial_id": "a", "epoch": 1, "acc": 0.1},
                                                            {"trial_id": "a", "epoch": 2, "acc": 0.2}]))
    t = table(fs, tmp_path)  # a resumed old sweep: parts are newer than the legacy file
    t.append([{"trial_id": "a", "epoch": 2, "acc": 0.9}])
    t.flush()
    assert sorted(zip(*read(fs, tmp_path)[["epoch", "acc"]].values.T)) == [(1, 0.1), (2, 0.9)]


# -- compaction --
def _fill(t, rng, n=40):
    written = []
    for _ in range(n):
        rows = [{"trial_id": f"t{rng.randrange(4)}", "epoch": rng.randrange(6), "acc": rng.random()}
                for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.2:
            rows[0]["loss"] = rng.random()
        t.append(rows)
        t.flush()
        written += rows
    return written


def test_compact_same_result_fewer_files(fs, tmp_path):
    rng = random.Random(11)
    t = table(fs, tmp_path)
    written = _fill(t, rng)
    before = read(fs, tmp_path)
    assert len(part_files(tmp_path)) == 40
    t.compact()
    assert len(part_files(tmp_path)) == 1
    assert canon(read(fs, tmp_path)) == canon(before)
    # later appends, compactions and rows still win over what was compacted
    written += _fill(t, rng, 10)
    t.compact()
    written += _fill(t, rng, 3)
    df = read(fs, tmp_path)
    want = expected(written)
    assert len(df) == len(want) == len(before.merge(df, on=list(KEY), how="outer"))
    for r in df.to_dict("records"):
        assert r["acc"] == want[(r["trial_id"], r["epoch"])]["acc"]


def test_compaction_killed_before_deleting_reads_the_same(fs, tmp_path):
    """Killed after writing the compacted part, before (or while) deleting the parts it replaced."""
    rng = random.Random(2)
    for case in range(5):
        root = tmp_path / f"c{case}"
        t = table(fs, root)
        _fill(t, rng, 15)
        before = canon(read(fs, root))
        saved = tmp_path / f"saved{case}"
        shutil.copytree(root / "epochs", saved)
        t.compact()
        for p in saved.iterdir():  # put back a random subset of the deleted parts
            if case == 0 or rng.random() < 0.5:
                shutil.copy(p, root / "epochs" / p.name)
        assert canon(read(fs, root)) == before
        t.compact()  # compacting the leftovers again, nothing appended in between
        assert canon(read(fs, root)) == before and len(part_files(root)) == 1
        for p in list(saved.iterdir())[:3]:
            shutil.copy(p, root / "epochs" / p.name)
        t.append([{"trial_id": "t0", "epoch": 0, "acc": 42.0}])  # and the writer goes on: its rows still win
        t.flush()
        df = read(fs, root)
        assert df.loc[(df.trial_id == "t0") & (df.epoch == 0), "acc"].tolist() == [42.0]
        t.compact()
        assert canon(read(fs, root)) == canon(df) and len(part_files(root)) == 1


def test_resumed_writer_wins_over_earlier_one(fs, tmp_path):
    a = table(fs, tmp_path)
    a.append([{"trial_id": "x", "epoch": 1, "acc": 1.0}, {"trial_id": "x", "epoch": 2, "acc": 2.0}])
    a.compact()
    a.flush()
    time.sleep(0.005)  # writer ids start with their creation time in ms
    b = table(fs, tmp_path)
    b.append([{"trial_id": "x", "epoch": 2, "acc": 20.0}])
    b.flush()
    assert sorted(zip(*read(fs, tmp_path)[["epoch", "acc"]].values.T)) == [(1, 1.0), (2, 20.0)]
    b.compact()
    assert sorted(zip(*read(fs, tmp_path)[["epoch", "acc"]].values.T)) == [(1, 1.0), (2, 20.0)]


def test_two_writers_do_not_collide(fs, tmp_path):
    a, b = table(fs, tmp_path), table(fs, tmp_path)
    assert a.writer != b.writer
    a.append([{"trial_id": "a", "epoch": e} for e in range(3)])
    b.append([{"trial_id": "b", "epoch": e} for e in range(4)])
    a.flush()
    b.flush()
    assert len(part_files(tmp_path)) == 2
    assert len(read(fs, tmp_path)) == 7


# -- flushing --
def test_flush_by_rows(fs, tmp_path):
    t = table(fs, tmp_path, flush_rows=3)
    assert not t.append([{"trial_id": "a", "epoch": 1}, {"trial_id": "a", "epoch": 2}])
    assert part_files(tmp_path) == [] and t.pending == 2 and read(fs, tmp_path).empty
    assert t.append([{"trial_id": "a", "epoch": 3}])
    assert len(part_files(tmp_path)) == 1 and t.pending == 0 and len(read(fs, tmp_path)) == 3


def test_flush_by_time(fs, tmp_path):
    clock = Clock(100.0)
    t = table(fs, tmp_path, flush_seconds=2.0, clock=clock)
    clock.t = 101.9
    assert not t.append([{"trial_id": "a", "epoch": 1}])
    clock.t = 102.0
    assert t.append([{"trial_id": "a", "epoch": 2}])
    clock.t = 103.0
    assert not t.append([{"trial_id": "a", "epoch": 3}])
    assert not t.maybe_flush()
    clock.t = 104.0
    assert t.maybe_flush()
    assert len(part_files(tmp_path)) == 2
    with t:
        t.append([{"trial_id": "a", "epoch": 4}])
    assert len(part_files(tmp_path)) == 3 and len(read(fs, tmp_path)) == 4


def test_append_cost_does_not_grow_with_the_table(fs, tmp_path):
    """20,000 rows in 1,000 appends, flush every 500 rows: 40 parts, the last flushes no slower than the first."""
    t = table(fs, tmp_path, flush_rows=500, merge_parts=10**9)  # appends alone (merging: the next test)
    flush_times = []
    for i in range(1000):
        rows = [{"trial_id": f"t{i % 50}", "epoch": i * 20 + j, "acc": j / 20, "loss": float(i)} for j in range(20)]
        start = time.perf_counter()
        if t.append(rows):
            flush_times.append(time.perf_counter() - start)
    assert len(flush_times) == 40 and len(part_files(tmp_path)) == 40
    first, last = statistics.median(flush_times[:10]), statistics.median(flush_times[-10:])
    assert last <= 3 * first + 0.002, (first, last)
    assert len(read(fs, tmp_path)) == 20_000


def test_flush_cost_independent_of_rows_already_in_the_table(fs, tmp_path):
    """A flush next to 300,000 existing rows costs what it costs in an empty table (no rescan, no rewrite)."""
    def flush_times(root, n=15):
        t, times = table(fs, root, flush_rows=200), []
        for i in range(n):
            start = time.perf_counter()
            assert t.append([{"trial_id": "new", "epoch": i * 200 + j, "acc": 0.5} for j in range(200)])
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    big = tmp_path / "big"
    (big / "epochs").mkdir(parents=True)
    n = 300_000
    pq.write_table(pa.table({"trial_id": pa.array(["old"] * n), "epoch": pa.array(range(n)),
                             "acc": pa.array([0.25] * n)}), big / "epochs" / "part-000000000000aaaa-000001.parquet")
    empty = flush_times(tmp_path / "empty")
    full = flush_times(big)
    assert full <= 3 * empty + 0.01, (empty, full)
    assert len(read(fs, big)) == n + 15 * 200


def test_any_pyarrow_filesystem(tmp_path):
    """Works through a SubTreeFileSystem (relative paths), not only local absolute paths."""
    sub = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    t = PartsTable(sub, "sweep", "thresholds", ("trial_id", "score"), flush_rows=2)
    t.append([{"trial_id": "a", "score": "msp", "v": 1}, {"trial_id": "a", "score": "energy", "v": 2}])
    t.append([{"trial_id": "a", "score": "msp", "v": 3}])
    t.flush()
    t.compact()
    assert len(t.parts()) == 1 and (tmp_path / "sweep" / "thresholds").is_dir()
    df = read_table(sub, "sweep", "thresholds", ("trial_id", "score"))
    assert sorted(zip(df["score"], df["v"])) == [("energy", 2), ("msp", 3)]


def test_a_writer_merges_its_own_latest_parts_so_they_never_pile_up(fs, tmp_path, monkeypatch):
    """Every 8 flushes the writer merges its last 8 parts into one, from the tables it holds (no part is read
    back, no row merged twice); the table reads the same as without merging."""
    from hier_tl.results import tables
    merged = []
    real = tables._combine
    monkeypatch.setattr(tables, "_combine", lambda ts, key: merged.append(sum(t.num_rows for t in ts)) or real(ts, key))
    monkeypatch.setattr(tables, "_read_part", lambda *a, **k: pytest.fail("a part was read back"))
    t = table(fs, tmp_path, flush_rows=10, merge_parts=8)
    for i in range(100):  # 1,000 rows, 100 flushes; trial t7's rows are rewritten (same key) as they go
        t.append([{"trial_id": f"t{i % 10}", "epoch": i, "acc": i / 100} for _ in range(10)])
    assert merged == [80] * 12 and len(part_files(tmp_path)) == 12 + 4  # 12 merged parts + 4 recent ones
    monkeypatch.undo()
    df = read(fs, tmp_path)
    assert len(df) == 100 and df.set_index("epoch").acc.to_dict() == {i: i / 100 for i in range(100)}


def test_a_snapshot_table_compacts_into_its_file_and_readers_skip_the_parts_it_covers(fs, tmp_path):
    """The trials table: compaction writes trials.parquet with the parts it holds; a compaction killed before
    deleting them (the parts copied back) reads the same, and the next compaction removes them."""
    import shutil
    t = PartsTable(fs, str(tmp_path), "trials", ("trial_id",), flush_rows=10**9, flush_seconds=math.inf,
                   snapshot=True)
    for status in ("pending", "running", "completed"):
        t.append([{"trial_id": "a", "status": status}, {"trial_id": "b", "status": status}])
        t.flush()
    parts = sorted((tmp_path / "trials").iterdir())
    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / "trials", saved)
    assert t.compact() == 2 and not list((tmp_path / "trials").iterdir())
    for p in saved.iterdir():  # as if the compaction had been killed before deleting them
        shutil.copy(p, tmp_path / "trials" / p.name)
    t.append([{"trial_id": "b", "status": "errored"}])
    t.flush()
    df = read_table(fs, str(tmp_path), "trials", ("trial_id",)).set_index("trial_id")
    assert dict(df.status) == {"a": "completed", "b": "errored"}  # the stale parts are skipped
    t.compact()
    assert [p.name for p in (tmp_path / "trials").iterdir()] == [] and len(parts) == 3
    assert dict(read_table(fs, str(tmp_path), "trials", ("trial_id",)).set_index("trial_id").status) == {
        "a": "completed", "b": "errored"}
