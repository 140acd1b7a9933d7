"""One dataset copy per machine (`memory`) and the trainer's speed through the mapping (`speed`).

memory: writes a dataset of --gb GB directly as a store (uint8 images of --side px, labelled by grey level;
no JPEGs, so nothing is decoded), then runs trials as a sweep runs them: each a process of its own that
opens the `DatasetRef` a sweep sends (`sweep.trainable.open_data`, which maps this machine's store) and
trains one epoch over every image (`train.fit`). One trial alone, then --trials at once, then, for
contrast, one trial holding the images in memory, as every trial did when Ray's object store handed each
its own deserialised copy. Once every trial of a round has finished its epoch, and while all are still
alive, their memory is read from /proc/PID/smaps_rollup as PSS (proportional set size: a page shared by
k processes counts 1/k in each, so the PSS of processes adds up to the memory they hold together), with
its split into anonymous memory (the process's own: the runtime, the model, an in-memory dataset) and
file pages (the mapped store, the libraries). Linux only.

speed: training images/s of `fit` on --data (a dataset folder, decoded through the cache) from the images
in memory (a private copy, as before) and from the mapped store, in one run, alternated --repeats times
after one untimed epoch of each; per second of wall time and per second of the process's CPU time
(steadier on a shared machine).
cnn_tiny by default: the cheaper the model, the larger the data path's share of a step.

    python bench/data_store.py memory --gb 3.5
    python bench/data_store.py speed --data ../shared/data/nndl64 --epochs 2 --repeats 4
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def trial_config(**over):
    from hier_tl.train.train_config import TrainConfig

    base = dict(backbone="cnn_tiny", depth="linear", epochs=1, batch_size=16, image_size=16, hflip=False,
                rotate_deg=0.0, jitter=0.0, val_fraction=0.05, eval_batch_size=16, threshold=-1e9)
    return TrainConfig(**{**base, **over})


def write_dataset(root: Path, n: int, side: int) -> None:
    """A dataset folder whose decoded store is written directly: image i is a grey of level i % 4, its
    subclass (superclass i % 4 // 2); the image files are empty placeholders the store stands for."""
    from hier_tl.data import images
    from hier_tl.data.store import write_meta, writing

    (root / "train_images").mkdir(parents=True)
    names = [f"{i}.jpg" for i in range(n)]
    for name in names:
        (root / "train_images" / name).touch()
    (root / "train_data.csv").write_text("image,superclass_index,subclass_index\n" +
                                         "".join(f"{m},{i % 4 // 2},{i % 4}\n" for i, m in enumerate(names)))
    (root / "superclass_mapping.csv").write_text("index,class\n0,a\n1,b\n2,novel\n")
    (root / "subclass_mapping.csv").write_text("index,class\n0,a0\n1,a1\n2,b0\n3,b1\n4,novel\n")
    folder = images.cache_dir() / images._cache_key([root / "train_images" / m for m in names], side)
    with writing(folder, (n, 3, side, side)) as new:
        for i in range(0, n, 64):
            new.array[i:i + 64] = (np.arange(i, min(i + 64, n)) % 4 * 60).astype(np.uint8)[:, None, None, None]
    write_meta(folder, {"names": names, "failed": {}, "modes": {"RGB": n}, "sizes": {f"{side}x{side}": n}})


def trial(ref_file: str, mode: str) -> None:
    """One trial process: open the sent dataset, train an epoch, say "ready", wait to be measured."""
    from hier_tl.sweep.trainable import open_data
    from hier_tl.train.trainer import fit

    data = open_data(pickle.loads(Path(ref_file).read_bytes()), None, lambda *a: None)
    if mode == "memory":  # the copy each trial deserialised from Ray's object store
        data = replace(data, images=data.images.clone(), store=None)
    t0 = time.perf_counter()
    res = fit(trial_config(), data)
    print(f"ready {len(data)} {time.perf_counter() - t0:.1f} {res.history[-1]['train_loss']:.3f}", flush=True)
    sys.stdin.read()


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss, Pss_Anon, Pss_File of a process, in bytes."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1)) * 1024
            for k in ("Rss", "Pss", "Pss_Anon", "Pss_File")}


def round_of(k: int, ref_file: Path, mode: str) -> tuple[list[dict], list[str], float]:
    """k trials at once; their memory once all have trained, while all are alive."""
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, __file__, "trial", str(ref_file), mode], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(k)]
    try:
        lines = [p.stdout.readline().strip() for p in procs]
        if not all(line.startswith("ready") for line in lines):
            raise SystemExit(f"a trial failed: {lines}")
        mem = [smaps(p.pid) for p in procs]
    finally:
        for p in procs:
            p.stdin.close()
            p.wait()
    return mem, lines, time.time() - t0


def memory(args) -> None:
    from hier_tl.data.dataset import load_dataset

    n = int(args.gb * 1e9 // (3 * args.side ** 2))
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        os.environ["HIER_TL_CACHE"] = str(Path(tmp) / "cache")  # the trials' too: they inherit it
        t0 = time.time()
        write_dataset(Path(tmp) / "data", n, args.side)
        data = load_dataset(Path(tmp) / "data", args.side)
        size = data.images.nbytes
        print(f"store: {n:,} images of {args.side} px = {size / 2**30:.2f} GiB, written in {time.time() - t0:.0f} s; "
              f"kernel {os.uname().release}, {os.cpu_count()} CPUs", flush=True)
        ref_file = Path(tmp) / "ref.pkl"
        ref_file.write_bytes(pickle.dumps(data.ref()))
        print(f"a trial is sent {len(ref_file.read_bytes()) / 1024:.0f} KiB (the DatasetRef), not the images")
        del data
        rows = {}
        rounds = (("1 trial, mapped", 1, "mapped"), (f"{args.trials} trials, mapped", args.trials, "mapped"),
                  ("1 trial, in memory (before)", 1, "memory"))
        for label, k, mode in rounds:
            mem, lines, wall = round_of(k, ref_file, mode)
            rows[label] = mem
            total = {key: sum(m[key] for m in mem) for key in mem[0]}
            print(f"{label:30s} PSS {total['Pss'] / 2**30:6.2f} GiB (anon {total['Pss_Anon'] / 2**30:5.2f}, file "
                  f"{total['Pss_File'] / 2**30:5.2f}); RSS summed {total['Rss'] / 2**30:6.2f} GiB; {wall:.0f} s; "
                  f"epoch s: {', '.join(line.split()[2] for line in lines)}", flush=True)
        one = sum(m["Pss"] for m in rows["1 trial, mapped"])
        many = sum(m["Pss"] for m in rows[f"{args.trials} trials, mapped"])
        anon = rows["1 trial, mapped"][0]["Pss_Anon"]
        print(f"\n{args.trials} trials / 1 trial (PSS): {many / one:.2f}x; the dataset is {size / one:.0%} of one "
              f"trial's PSS, the runtime's own memory (anon) {anon / 2**30:.2f} GiB = {anon / one:.0%}; before, "
              f"{args.trials} trials would hold {args.trials} copies: "
              f"{args.trials * sum(m['Pss'] for m in rows['1 trial, in memory (before)']) / 2**30:.1f} GiB")


def speed(args) -> None:
    import torch

    from hier_tl.data.dataset import load_dataset

    mapped = load_dataset(args.data)
    assert mapped.store is not None, "the decode cache could not be written: nothing is mapped"
    in_memory = replace(mapped, images=mapped.images.clone(), store=None)
    cfg = trial_config(backbone=args.backbone, depth="full", epochs=args.epochs, batch_size=64, image_size=0,
                       hflip=True, rotate_deg=10.0, jitter=0.2, val_fraction=0.1, eval_batch_size=512)
    print(f"{args.data}: {len(mapped)} images, {args.backbone}, batch 64, {args.epochs} epoch(s) x {args.repeats} "
          f"runs per path, alternated; torch threads {torch.get_num_threads()}", flush=True)
    rates = {"in memory": [], "mapped": []}
    for data in (in_memory, mapped):  # untimed: the first epochs of a process warm its allocator and caches
        epoch_rates(replace(cfg, epochs=1), data)
    for r in range(args.repeats):
        for name in ("in memory", "mapped") if r % 2 == 0 else ("mapped", "in memory"):
            got = epoch_rates(cfg, in_memory if name == "in memory" else mapped)
            rates[name] += got
            print(f"  {name:9s} run {r + 1}: " + ", ".join(f"{w:.1f} images/s ({c:.1f} per CPU-s)" for w, c in got),
                  flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in rates.items()}
    for k, (w, c) in med.items():
        print(f"{k:9s} median of {len(rates[k])} epochs: {w:.1f} images/s, {c:.1f} images per CPU-second")
    print(f"mapped / in memory: {med['mapped'][0] / med['in memory'][0]:.3f} (wall), "
          f"{med['mapped'][1] / med['in memory'][1]:.3f} (CPU time)")


def epoch_rates(cfg, data) -> list[tuple[float, float]]:
    """(training images per second of wall time, per second of this process's CPU time) of every epoch,
    timed between the trainer's "training" and "evaluating" phases."""
    from hier_tl.train.trainer import fit

    marks = []
    res = fit(cfg, data, progress=lambda phase, *_: marks.append((phase, time.perf_counter(), time.process_time())))
    n = res.history[0]["images_per_s"] * res.history[0]["train_time"]
    starts = [m for m in marks if m[0] == "training"]
    ends = [m for m in marks if m[0] == "evaluating"]
    return [(n / (e[1] - s[1]), n / (e[2] - s[2])) for s, e in zip(starts, ends)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--gb", type=float, default=3.5)
    m.add_argument("--side", type=int, default=512)
    m.add_argument("--trials", type=int, default=4)
    m.add_argument("--tmp", default=None, help="where to write the store (a local disk)")
    s = sub.add_parser("speed")
    s.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nndl64"))
    s.add_argument("--backbone", default="cnn_tiny")
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--repeats", type=int, default=4)
    t = sub.add_parser("trial")
    t.add_argument("ref")
    t.add_argument("mode")
    args = ap.parse_args()
    if args.what == "trial":
        trial(args.ref, args.mode)
    else:
        {"memory": memory, "speed": speed}[args.what](args)


if __name__ == "__main__":
    main()
