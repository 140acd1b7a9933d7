"""data.store: decoded images in a preallocated .npy file that every process maps read-only; a store is
complete only with its meta.json, shrinks in place, and is fetched once per machine; training reads a
dataset larger than the memory it may use."""

import errno
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hier_tl.core.errors import StorageError
from hier_tl.data import images as I
from hier_tl.data import store

ROOT = Path(__file__).resolve().parents[1]


def _write(folder: Path, n: int, side: int = 8) -> np.ndarray:
    want = np.arange(n * 3 * side * side, dtype=np.int64).reshape(n, 3, side, side).astype(np.uint8)
    with store.writing(folder, want.shape) as new:
        new.array[:] = want
    store.write_meta(folder, {"names": [f"{i}.jpg" for i in range(n)], "failed": {}, "modes": {}, "sizes": {}})
    return want


def _maps(path: Path) -> list[str]:
    """This process's mappings of `path` (their permission column: r--s is read-only and shared)."""
    return [line.split()[1] for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(str(path))]


def test_a_store_is_mapped_read_only_and_shared_not_read(tmp_path):
    want = _write(tmp_path / "s", 5)
    images = store.open_images(tmp_path / "s", (5, 3, 8, 8))
    assert images.dtype == torch.uint8 and np.array_equal(images.numpy(), want)
    assert _maps(tmp_path / "s" / store.IMAGES) == ["r--s"]  # shared: the page cache holds the one copy
    assert store.complete(tmp_path / "s", (5, 3, 8, 8)) and store.complete(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [store.IMAGES, store.META]  # no temporary left


# (what is wrong with the store): never complete, so it is fetched or decoded again
INCOMPLETE = {
    "no_meta": lambda f: (f / store.META).unlink(),
    "no_images": lambda f: (f / store.IMAGES).unlink(),
    "truncated": lambda f: (f / store.IMAGES).write_bytes((f / store.IMAGES).read_bytes()[:500]),
    "floats": lambda f: np.save(f / store.IMAGES, np.zeros((5, 3, 8, 8), np.float32)),
    "another_shape": lambda f: np.save(f / store.IMAGES, np.zeros((5, 3, 4, 4), np.uint8)),
    "not_npy": lambda f: (f / store.IMAGES).write_text("hello"),
}


@pytest.mark.parametrize("case", sorted(INCOMPLETE))
def test_an_incomplete_or_foreign_store_is_not_complete(tmp_path, case):
    _write(tmp_path / "s", 5)
    INCOMPLETE[case](tmp_path / "s")
    assert not store.complete(tmp_path / "s", (5, 3, 8, 8))


@pytest.mark.parametrize("keep", [0, 1, 3, 5])
def test_a_store_keeps_the_rows_its_writer_kept_before_it_is_in_place(tmp_path, keep):
    want = np.arange(5 * 3 * 8 * 8, dtype=np.int64).reshape(5, 3, 8, 8).astype(np.uint8)
    with store.writing(tmp_path / "s", want.shape) as new:
        new.array[:] = want
        new.rows = keep
        assert not (tmp_path / "s" / store.IMAGES).exists()  # nothing in place until it is cut
    got = store.open_images(tmp_path / "s", (keep, 3, 8, 8))
    assert np.array_equal(got.numpy(), want[:keep])
    assert (tmp_path / "s" / store.IMAGES).stat().st_size == 128 + keep * 3 * 8 * 8  # the 128-byte header


def test_a_full_disk_fails_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "posix_fallocate", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(StorageError, match="no space left on the device"):
        with store.writing(tmp_path / "s", (1000, 3, 64, 64)):
            raise AssertionError("written")
    assert list((tmp_path / "s").iterdir()) == []


@pytest.mark.slow
def test_processes_asking_together_fetch_a_store_once(tmp_path):
    """Trials starting together on a machine without the store: one fetches it, the others wait and map it."""
    code = textwrap.dedent("""
        import sys, time
        import numpy as np
        from hier_tl.data import store
        ref, calls = store.StoreRef("k", (4, 3, 8, 8)), []
        def fetch(folder):
            calls.append(1)
            time.sleep(0.5)
            with store.writing(folder, ref.shape) as new:
                new.array[:] = 7
            store.write_meta(folder, {})
            return True
        assert store.obtain(ref, fetch) and int(store.open_images(ref.folder, ref.shape).sum()) == 7 * 4 * 3 * 64
        print(len(calls))
    """)
    env = {**os.environ, "HIER_TL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
             for _ in range(3)]
    assert sorted(p.communicate()[0].strip() for p in procs) == ["0", "0", "1"]


def test_obtain_without_a_way_to_fetch_says_no(tmp_path, monkeypatch):
    monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path))
    ref = store.StoreRef("k", (5, 3, 8, 8))
    assert not store.obtain(ref, None) and not store.obtain(ref, lambda folder: False)
    _write(ref.folder, 5)
    assert store.obtain(ref, None) and store.obtain(ref, lambda folder: pytest.fail("fetched"))


SIDE, N, LIMIT = 512, 1800, 1250 * 2**20  # a 1.41 GB store; the process may hold 1.25 GB of data
TRAIN = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_DATA, (int(sys.argv[2]), int(sys.argv[2])))
    if sys.argv[3] == "read":  # the dataset read into memory, as the decode cache once was
        import numpy as np
        np.load(sys.argv[1])
    else:
        from hier_tl.data.dataset import load_dataset
        from hier_tl.train.train_config import TrainConfig
        from hier_tl.train.trainer import fit
        ds = load_dataset(sys.argv[1], int(sys.argv[3]))
        res = fit(TrainConfig(backbone="cnn_tiny", depth="linear", epochs=1, batch_size=16, image_size=16,
                              hflip=False, rotate_deg=0, jitter=0, val_fraction=0.3, eval_batch_size=16), ds)
        print(len(ds), res.history[-1]["train_loss"], len(res.outputs.sub_target))
""")


def _layout(root: Path, n: int, side: int) -> Path:
    """A dataset folder whose decoded store is written directly (image i a grey of level i % 4, its subclass):
    its image files are empty placeholders, never decoded; the benchmark's own helper (bench/data_store.py),
    so the benchmark's data path is tested too. Returns the store's images file."""
    spec = importlib.util.spec_from_file_location("data_store_bench", ROOT / "bench" / "data_store.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_dataset(root, n, side)
    names = [root / "train_images" / f"{i}.jpg" for i in range(n)]
    return I.cache_dir() / I._cache_key(names, side) / store.IMAGES


@pytest.mark.slow
def test_training_reads_a_dataset_larger_than_the_memory_it_may_use(tmp_path, monkeypatch):
    """RLIMIT_DATA (brk and private writable mappings; not read-only shared file mappings, Linux >= 4.7) below
    the store's size: reading the dataset into memory is refused, training through the mapping is not."""
    monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path / "cache"))
    try:
        path = _layout(tmp_path / "data", N, SIDE)
        assert path.stat().st_size > LIMIT + 100 * 2**20
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        read = subprocess.run([sys.executable, "-c", TRAIN, str(path), str(LIMIT), "read"], capture_output=True,
                              text=True, env=env)
        assert read.returncode != 0 and "MemoryError" in read.stderr  # the limit bites
        run = subprocess.run([sys.executable, "-c", TRAIN, str(tmp_path / "data"), str(LIMIT), str(SIDE)],
                             capture_output=True, text=True, env=env, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        n, loss, validated = run.stdout.split()
        assert int(n) == N and np.isfinite(float(loss)) and int(validated) == 540  # 30% of every subclass
    finally:
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # 1.4 GB: not left for pytest to keep
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
