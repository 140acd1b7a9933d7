"""Peak memory of decoding a folder of images, as a multiple of the decoded dataset's bytes (N x 3 x S x S).

Writes N small random images (JPEG, mixed sizes) to a temporary folder, then decodes them twice, each in a
fresh process whose peak RSS is reset after its imports: "before", the way hier-tl decoded until it
preallocated (an N x S x S x 3 array, the copy of the images that decoded, then the transposed contiguous
copy: three copies at once), and "after", `hier_tl.data.images.decode_images` as it is (one preallocated
N x 3 x S x S array), cache write included. Linux only (/proc/self/status, /proc/self/clear_refs).

    python bench/decode_memory.py                     # 20,000 images decoded at 64 px
    python bench/decode_memory.py --images 50000 --side 96
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """N random JPEGs of 24 to 48 px (so decoding also resizes), a few of them broken (so filtering happens)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        side = int(rng.integers(24, 49))
        p = folder / f"{i}.jpg"
        if i % 1000 == 999:
            p.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(p, quality=80)
        paths.append(p)
    return paths


def decode_before(paths: list[Path], size: int):
    """The decoding hier-tl did before preallocating: NHWC array, the decoded rows' copy, the transposed copy."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from hier_tl.data.images import _decode_one

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)

    def work(i):
        try:
            out[i] = _decode_one(paths[i], size)[0]
            ok[i] = True
        except Exception:  # noqa: BLE001
            pass

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        list(pool.map(work, range(len(paths))))
    return torch.from_numpy(np.ascontiguousarray(out[ok].transpose(0, 3, 1, 2)))


def _status(key: str) -> int:
    """A /proc/self/status value in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def child(how: str, folder: str, size: int, cache: str) -> None:
    """Decode in this process and print one JSON line: peak RSS over the baseline, decoded bytes, seconds."""
    os.environ["HIER_TL_CACHE"] = cache
    import torch  # noqa: F401 - imports first, so the baseline holds them

    from hier_tl.data.images import decode_images, list_images

    paths = list_images(folder)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    base, t0 = _status("VmRSS"), time.perf_counter()
    images = decode_before(paths, size) if how == "before" else decode_images(paths, size).images
    seconds = time.perf_counter() - t0
    print(json.dumps({"peak": _status("VmHWM") - base, "bytes": images.numel(), "n": len(images), "s": seconds}))


def measure(how: str, folder: Path, size: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, __file__, "--child", how, str(folder), str(size), cache],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--side", type=int, default=64, help="the side images are decoded at")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        how, folder, size, cache = args.child
        return child(how, folder, int(size), cache)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_images(Path(tmp) / "images", args.images)
        print(f"{args.images:,} images written in {time.perf_counter() - t0:.1f} s; decoded at "
              f"{args.side}x{args.side}, one in 1,000 broken")
        for how, what in (("before", "NHWC array + decoded rows' copy + transposed copy"),
                          ("after", "one preallocated N x 3 x H x W array, cache write included")):
            m = measure(how, Path(tmp) / "images", args.side)
            print(f"{how:6s} peak RSS {m['peak'] / 2**20:7.1f} MiB = {m['peak'] / m['bytes']:.2f} x the dataset "
                  f"({m['n']:,} images, {m['bytes'] / 2**20:.1f} MiB), {m['s']:.1f} s  ({what})")


if __name__ == "__main__":
    main()
