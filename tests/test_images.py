"""data.images: decode once into a uint8 tensor, cached on disk under the image names, sizes and times."""

import os

import numpy as np
from PIL import Image

from hier_tl.data import dataset as D
from hier_tl.data.images import numeric_key


def test_second_load_comes_from_cache_without_decoding(synth_copy, monkeypatch):
    first = D.load_dataset(synth_copy)
    from hier_tl.data import images as I
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
