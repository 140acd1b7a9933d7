"""data.images: decode once into a uint8 tensor, cached on disk under the image names, sizes and times; the
memory it needs is checked before decoding, and decoding holds one copy of the dataset, not three."""

import errno
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hier_tl.cli import main
from hier_tl.core.errors import ConfigError
from hier_tl.data import dataset as D
from hier_tl.data import images as I
from hier_tl.data.images import numeric_key


def test_second_load_comes_from_cache_without_decoding(synth_copy, monkeypatch):
    first = D.load_dataset(synth_copy)
    monkeypatch.setattr(I, "_decode_one", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    second = D.load_dataset(synth_copy)
    assert (first.images == second.images).all() and first.names == second.names


def test_cache_is_invalidated_when_an_image_changes(synth_copy):
    first = D.load_dataset(synth_copy)
    img = synth_copy / "train_images" / first.names[0]
    Image.new("RGB", (64, 64), (255, 0, 0)).save(img)
    second = D.load_dataset(synth_copy)
    assert not (first.images[0] == second.images[0]).all()
    assert (second.images[0, 0] > 200).all()


def test_modes_and_sizes_are_converted_with_a_note(synth_copy):
    names = sorted(os.listdir(synth_copy / "train_images"), key=numeric_key)
    Image.new("L", (64, 64), 128).save(synth_copy / "train_images" / names[0])
    Image.new("RGBA", (64, 64), (1, 2, 3, 4)).save(synth_copy / "train_images" / names[1], format="PNG")
    Image.new("P", (64, 64)).save(synth_copy / "train_images" / names[2], format="PNG")
    Image.new("RGB", (100, 80)).save(synth_copy / "train_images" / names[3], format="JPEG")
    ds = D.load_dataset(synth_copy)
    assert ds.images.shape[1:] == (3, 64, 64)
    text = " ".join(ds.warnings)
    assert "converted to RGB" in text and "'L': 1" in text and "'RGBA': 1" in text and "'P': 1" in text
    assert "resized to 64x64" in text and "100x80" in text


def test_sixteen_bit_images_are_rescaled_not_clipped(synth_copy):
    names = sorted(os.listdir(synth_copy / "train_images"), key=numeric_key)
    arr = np.full((64, 64), 32768, dtype=np.uint16)  # mid-grey at 16 bits
    Image.fromarray(arr).save(synth_copy / "train_images" / names[0], format="PNG")
    ds = D.load_dataset(synth_copy)
    i = ds.names.index(names[0])
    assert 120 <= int(ds.images[i].float().mean()) <= 136


# (images, side, bytes available, refused?): the decoded array is images x 3 x side x side bytes, nothing more
FITS = [(1000, 64, 12_288_000, False), (1000, 64, 12_287_999, True), (50_000, 224, 8 * 2**30, False),
        (50_000, 224, 7 * 2**30, True), (0, 64, 0, False), (1, 16, 768, False), (1, 16, 767, True)]


@pytest.mark.parametrize("n,side,available,refused", FITS)
def test_memory_is_checked_from_the_count_and_side_alone(n, side, available, refused):
    assert I.dataset_bytes(n, side) == n * 3 * side * side
    if not refused:
        I.check_memory(n, side, available)
        return
    with pytest.raises(ConfigError) as e:
        I.check_memory(n, side, available)
    msg = str(e.value)
    assert "\n" not in msg and f"{n:,} images decoded at {side}x{side}" in msg and "available" in msg


def test_a_dataset_too_large_for_memory_and_cache_is_refused_before_decoding_anything(synth_copy, monkeypatch,
                                                                                      capsys):
    monkeypatch.setattr(I, "available_memory", lambda: 10 * 2**20)  # 10 MiB left; 144 images at 512 px need 108
    monkeypatch.setattr(I, "_decode_one", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    monkeypatch.setattr(os, "posix_fallocate", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    assert main(["data", "check", str(synth_copy), "--image-size", "512"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: 144 images decoded at 512x512 need 108.0 MiB of memory and 10.0 MiB is available (the image cache at ")
    assert err[0].endswith("no space left on the device): use a smaller image side (or fewer images), or free "
                           "memory or disk space for the cache (HIER_TL_CACHE)")


def test_a_dataset_larger_than_memory_is_decoded_into_the_cache_and_mapped(synth_copy, monkeypatch):
    monkeypatch.setattr(I, "available_memory", lambda: 10 * 2**20)  # the 108 MiB never sit in memory
    ds = D.load_dataset(synth_copy, 512)
    assert ds.images.shape == (144, 3, 512, 512) and ds.store.shape == (144, 3, 512, 512)
    mapped = [line for line in Path("/proc/self/maps").read_text().splitlines()
              if line.endswith(str(ds.store.folder / "images.npy"))]
    assert mapped and all(line.split()[1].startswith("r-") for line in mapped)  # mapped, read-only
    assert ds.store.folder.parent == I.cache_dir()


def _folder(tmp_path, n: int, broken: int) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        if i < broken:
            p.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("n,broken", [(200, 0), (200, 1), (200, 100), (200, 200), (1, 0)])
def test_decoding_allocates_the_dataset_once(tmp_path, n, broken):
    """Peak of numpy's allocations while decoding (tracemalloc sees them): one N x 3 x S x S array, not three."""
    paths = _folder(tmp_path, n, broken)
    I.decode_images(paths, 64, use_cache=False)  # first: PIL imports its plugins (traced too) on a broken file
    tracemalloc.start()
    try:
        imgs = I.decode_images(paths, 64, use_cache=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 1.3 * I.dataset_bytes(n, 64) + 2**20  # + 1 MiB: the decoding threads' own buffers
    assert imgs.images.shape == (n - broken, 3, 64, 64) and len(imgs.failed) == broken
    assert imgs.names == [p.name for p in paths[broken:]]
    if n > broken:  # rows packed in order: the last row is the last image
        last = np.asarray(Image.open(paths[-1]).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
        assert (imgs.images[-1].permute(1, 2, 0).numpy() == last).all()


# The decode cache, damaged or holding something else: each is decoded again, never trusted, never a traceback
CACHE_DAMAGE = {
    "meta_not_json": lambda c: (c / "meta.json").write_text("{not json"),
    "meta_a_list": lambda c: (c / "meta.json").write_text("[1, 2]"),
    "meta_names_a_number": lambda c: (c / "meta.json").write_text(
        json.dumps({**json.loads((c / "meta.json").read_text()), "names": 5})),
    "meta_one_name_short": lambda c: (c / "meta.json").write_text(
        json.dumps({**json.loads((c / "meta.json").read_text()), "names": json.loads(
            (c / "meta.json").read_text())["names"][1:]})),
    "array_truncated": lambda c: (c / "images.npy").write_bytes((c / "images.npy").read_bytes()[:1000]),
    "array_of_another_shape": lambda c: np.save(c / "images.npy", np.zeros((3, 3, 8, 8), np.uint8)),
    "array_of_floats": lambda c: np.save(c / "images.npy", np.load(c / "images.npy").astype(np.float32)),
    "array_missing": lambda c: (c / "images.npy").unlink(),
}


@pytest.mark.parametrize("case", sorted(CACHE_DAMAGE))
def test_a_damaged_cache_is_decoded_again(tmp_path, monkeypatch, case):
    monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "imgs").mkdir()
    paths = _folder(tmp_path / "imgs", 6, 1)
    first = I.decode_images(paths, 32)
    want = first.images.clone()  # a copy: damaging the file in place would pull the pages from under a mapping
    (cdir,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # (beside it: its lock file)
    CACHE_DAMAGE[case](cdir)
    again = I.decode_images(paths, 32)
    assert again.names == first.names and again.failed.keys() == first.failed.keys()
    assert torch.equal(again.images, want)


def test_decoding_more_than_a_chunk_says_how_far_it_is(tmp_path, monkeypatch, capsys):
    for i in range(10):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(I, "CHUNK", 4)  # three chunks
    got = I.decode_images(sorted(tmp_path.glob("*.png")), 8, use_cache=False)
    assert len(got.names) == 10
    err = capsys.readouterr().err  # a log, not a terminal: plain lines with the count and the rate
    assert "decoding: 10/10 images (" in err and "\r" not in err
    I.decode_images(sorted(tmp_path.glob("*.png"))[:4], 8, use_cache=False)  # one chunk: nothing said
    assert capsys.readouterr().err == ""


def test_the_cache_key_is_the_same_from_any_working_directory(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "d" / "0.png")
    monkeypatch.chdir(tmp_path)  # a trial runs in its own folder: a relative path names the same image
    assert I._cache_key([Path("d/0.png")], 8) == I._cache_key([tmp_path / "d" / "0.png"], 8)


def test_a_dataset_opened_by_a_relative_path_records_where_it_is(synth_copy, monkeypatch):
    monkeypatch.chdir(synth_copy.parent)
    ds = D.load_dataset(synth_copy.name)
    assert ds.root == synth_copy and ds.root.is_absolute()


@pytest.mark.slow
def test_processes_decoding_the_same_new_dataset_together_decode_it_once(tmp_path):
    import subprocess
    import sys
    import textwrap

    (tmp_path / "imgs").mkdir()
    _folder(tmp_path / "imgs", 6, 0)
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from hier_tl.data import images as I
        real = I._decode_one
        def counted(path, size):
            with open({str(tmp_path / "decoded.log")!r}, "a") as f:
                f.write(path.name + "\\n")
            time.sleep(0.1)
            return real(path, size)
        I._decode_one = counted
        got = I.decode_images(sorted(Path({str(tmp_path / "imgs")!r}).iterdir()), 16)
        print(len(got.names), got.store is not None)
    """)
    env = {**os.environ, "HIER_TL_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
             for _ in range(3)]
    assert [p.communicate(timeout=120)[0].split() for p in procs] == [["6", "True"]] * 3
    assert len((tmp_path / "decoded.log").read_text().split()) == 6  # each image decoded once, by one process
