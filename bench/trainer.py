"""hier-tl's trainer against a plain reference of the seed paper's pipeline, in the same run.

Reference: PIL images read from disk every epoch through a DataLoader with per-image torchvision
transforms (flip, rotation 10, colour jitter 0.2, normalise), N worker processes. Same split, model,
optimiser, schedule, epochs and batch size as hier-tl. Prints images/s of both, the ratio, and the
validation accuracy of both (argmax, no novelty rule, seen classes).

    python bench/trainer.py --data ../shared/data/nndl64 --epochs 10 --backbone cnn
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision import transforms as T

from hier_tl.data.dataset import load_dataset
from hier_tl.data.split import make_split
from hier_tl.train.models import build_model
from hier_tl.train.optim import make_optimizer, make_schedule
from hier_tl.train.train_config import TrainConfig
from hier_tl.train.trainer import fit, resolve_device, seed_everything


class PaperDataset(TorchDataset):
    def __init__(self, root: Path, names, sup, sub, transform):
        self.root, self.names, self.sup, self.sub, self.transform = root, names, sup, sub, transform

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        img = Image.open(self.root / "train_images" / self.names[i]).convert("RGB")
        return self.transform(img), self.sup[i], self.sub[i]


def reference(cfg: TrainConfig, ds, split, workers: int, device) -> dict:
    seed_everything(cfg.seed)
    norm = T.Normalize((0.5,) * 3, (0.5,) * 3)
    train_tf = T.Compose([T.RandomHorizontalFlip(), T.RandomRotation(cfg.rotate_deg),
                          T.ColorJitter(cfg.jitter, cfg.jitter, cfg.jitter), T.ToTensor(), norm])
    sup, sub = split.space.encode(ds.superclass, ds.subclass)
    pick = lambda idx, tf: PaperDataset(ds.root, [ds.names[i] for i in idx], sup[idx].tolist(),  # noqa: E731
                                        sub[idx].tolist(), tf)
    train = DataLoader(pick(split.train, train_tf), batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                       drop_last=False, persistent_workers=workers > 0)
    val = DataLoader(pick(split.val, T.Compose([T.ToTensor(), norm])), batch_size=256, num_workers=workers)
    model, _ = build_model(cfg, len(split.space.supers), len(split.space.subs))
    model.to(device)
    opt = make_optimizer(cfg, model)
    sched = make_schedule(cfg, opt, math.ceil(len(split.train) / cfg.batch_size))
    train_s = 0.0
    for _ in range(cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        for x, ys, yb in train:
            x, ys, yb = x.to(device), ys.to(device), yb.to(device)
            a, b = model(x)
            loss = F.cross_entropy(a, ys) + F.cross_entropy(b, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0
    model.eval()
    right_s = right_b = n = 0
    with torch.no_grad():
        for x, ys, yb in val:
            a, b = model(x.to(device))
            right_s += int((a.argmax(1).cpu() == ys).sum())
            right_b += int((b.argmax(1).cpu() == yb).sum())
            n += len(ys)
    return {"images_per_s": len(split.train) * cfg.epochs / train_s, "super_acc": right_s / n, "sub_acc": right_b / n,
            "train_s": train_s}


def ours(cfg: TrainConfig, ds, compile_model: bool = False) -> dict:
    import hier_tl.train.trainer as train

    def build(*a, _orig=train.build_model):
        model, bb = _orig(*a)
        model.compile(dynamic=False)
        return model, bb
    # torch.compile: the experiment behind README's figures; not a trainer option (it did not pay)
    orig, train.build_model = train.build_model, (build if compile_model else train.build_model)
    try:
        res = fit(cfg.replace(threshold=-1e9), ds)  # no novelty rule: plain argmax accuracy, as the reference
    finally:
        train.build_model = orig
    h = res.history
    train_s = sum(m["train_time"] for m in h)
    n_train = h[0]["images_per_s"] * h[0]["train_time"]
    return {"images_per_s": n_train * len(h) / train_s, "super_acc": h[-1]["seen_super_acc"],
            "sub_acc": h[-1]["seen_sub_acc"], "train_s": train_s, "first_epoch_s": h[0]["train_time"],
            "later_epoch_s": sum(m["train_time"] for m in h[1:]) / max(1, len(h) - 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "nndl64"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--backbone", default="cnn")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="hier-tl's precision: auto (bf16 on GPU) | bf16 | fp32; "
                    "the reference is fp32")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time hier-tl with torch.compile (compile time "
                    "counts: it lands in the first epoch)")
    args = ap.parse_args()
    cfg = TrainConfig(backbone=args.backbone, weights=args.weights, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, device=args.device, precision=args.precision)
    device = resolve_device(args.device)
    ds = load_dataset(args.data)
    split = make_split(ds, cfg.val_fraction, cfg.split_seed)
    print(f"{args.data}: {len(split.train)} train / {len(split.val)} val images; {cfg.backbone}, {cfg.epochs} epochs, "
          f"batch {cfg.batch_size}, device {device}, torch threads {torch.get_num_threads()}", flush=True)
    rows = {}
    if not args.skip_reference:
        rows["reference"] = reference(cfg, ds, split, args.workers, device)
        print(f"reference ({args.workers} workers): {rows['reference']}", flush=True)
    rows["hier-tl"] = ours(cfg, ds)
    print(f"hier-tl: {rows['hier-tl']}", flush=True)
    if args.compile:
        rows["+compile"] = ours(cfg, ds, compile_model=True)
        print(f"hier-tl + torch.compile: {rows['+compile']}", flush=True)
    print(f"\n{'pipeline':12s} {'images/s':>10s} {'train s':>8s} {'super acc':>10s} {'sub acc':>8s}")
    for name, r in rows.items():
        print(f"{name:12s} {r['images_per_s']:10.1f} {r['train_s']:8.1f} {100 * r['super_acc']:9.2f}% "
              f"{100 * r['sub_acc']:7.2f}%")
    if "+compile" in rows:
        a, b = rows["hier-tl"], rows["+compile"]
        print(f"torch.compile: {b['train_s']:.1f} s vs {a['train_s']:.1f} s eager over {cfg.epochs} epochs (first epoch "
              f"{b['first_epoch_s']:.1f} vs {a['first_epoch_s']:.1f} s, later {b['later_epoch_s']:.2f} vs "
              f"{a['later_epoch_s']:.2f} s/epoch)")
    if "reference" in rows:
        print(f"\nthroughput ratio hier-tl / reference: {rows['hier-tl']['images_per_s'] / rows['reference']['images_per_s']:.2f}x")


if __name__ == "__main__":
    main()
