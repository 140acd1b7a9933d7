"""Cost of `hier-tl predict` per image as the folder grows: 1k, 10k, 100k images (flat is the goal).

Trains a tiny model for one epoch on synthetic 32 px data, writes N small PNGs into a temporary folder, and
times `write_predictions` (decoding, the model, the novelty rule and the CSV, streamed in chunks) on each
size, printing ms per image and the ratio to the smallest size, with the peak resident memory.

    python bench/predict_scale.py                     # 1,000 / 10,000 / 100,000 images
    python bench/predict_scale.py --sizes 1000 20000
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hier_tl.data.synthetic import SynthSpec, load_source
from hier_tl.predict.predict import Predictor, write_predictions
from hier_tl.train.train_config import TrainConfig
from hier_tl.train.trainer import fit


def folder(root: Path, n: int, side: int = 32) -> Path:
    out = root / f"imgs{n}"
    out.mkdir()
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(out / f"{i}.png")
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = ap.parse_args()
    data = load_source("synthetic", SynthSpec(subs_per_super=2, per_class=20, size=32))
    saved = {}
    fit(TrainConfig(backbone="cnn_tiny", epochs=1, batch_size=32, device="cpu"), data,
        lambda r: saved.update(state=r.state()))
    predictor = Predictor.from_checkpoint(saved["state"], threshold=0.5)
    print(f"{os.cpu_count()} CPUs; chunked streaming predict of N random 32 px PNGs with cnn_tiny + msp")
    print(f"{'images':>8} {'seconds':>8} {'ms/image':>9} {'x first':>8} {'peak RSS MiB':>13}")
    first = None
    with tempfile.TemporaryDirectory() as d:
        for n in args.sizes:
            imgs = folder(Path(d), n)
            t0 = time.perf_counter()
            assert write_predictions(predictor, imgs, Path(d) / f"p{n}.csv") == n
            s = time.perf_counter() - t0
            per = s / n * 1e3
            first = first or per
            print(f"{n:>8,} {s:>8.1f} {per:>9.3f} {per / first:>8.2f} {peak_rss_mib():>13.0f}", flush=True)


if __name__ == "__main__":
    main()
