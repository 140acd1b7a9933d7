"""Category discovery (`predict --discover`) validated: each validation split is the unlabelled set.

    python bench/discovery.py --outputs .cache/s0.pt             # saved fold outputs (bench/quality.py --save-outputs)
    python bench/discovery.py --outputs s0.pt --score pretrained_hier --threshold tpr:0.99/tpr:0.965
    python bench/discovery.py --outputs s0.pt --new-clusters 4 6 8   # k-means clusters on top, per superclass
    python bench/discovery.py --outputs s0.pt --keep 0.98 0.99 0.995  # the neighbour rule's threshold
    python bench/discovery.py --outputs s0.pt --bank-per-class 6   # a folder as large as the bank, per class
    python bench/discovery.py --trial CKPT --data DATA --with-images DATA/test_images   # a test folder's crowd
    python bench/discovery.py --trial SWEEP/TRIAL/checkpoint_000004/checkpoint.pt --data DATA   # a sweep trial

Per fold: the superclass rule alone (the seen-subclass accuracy a subclass rule costs points of), the
per-image rule (score at threshold), then discovery in place of its subclass threshold
(`hier_tl.train.clusters`): the neighbour rule (`predict --discover`), the same with k-means clusters
(`--discover K`), and the clusters alone, with the new breeds caught as novel subclasses, seen-subclass
accuracy, novel superclass caught and the new breeds called a novel superclass; the novel-subclass groups
found per superclass (the protocol holds out 3 subclasses of each seen superclass); mean +- spread over
folds. A validation split is a small pool (~6 images per seen subclass beside ~56 in the bank):
`--with-images` adds a test folder's images to fold 0's pool, `--bank-per-class` shrinks the bank, and the
metrics stay those of the validation images.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import torch

from hier_tl.train.clusters import NEIGHBOUR_KEEP, discover
from hier_tl.train.metrics import (
    NEW_BREED_SUPER,
    NEW_SUB,
    accuracy,
    evaluate,
    new_breed_as_novel_super,
    new_subclass_acc,
)
from hier_tl.train.novelty import predict
from hier_tl.train.outputs import Outputs

KEYS = ("seen_super_acc", "novel_super_acc", "seen_sub_acc", NEW_SUB, NEW_BREED_SUPER)


def rows_for(out: Outputs, score: str, threshold: str, max_new: int, fold: int,
             new_clusters: tuple[int, ...] = (), keeps: tuple[float, ...] = (NEIGHBOUR_KEEP,),
             bank_per_class: int | None = None, crowd: Outputs | None = None) -> list[dict]:
    """Rows of one fold's table. `crowd`: more images (unlabelled) that join the pool discovery sees; the
    metrics stay those of the validation images."""
    m = evaluate(out, out.space, score, threshold)
    no_sub_rule = predict(out, out.space, score, m["threshold_super"], -math.inf)  # "points of seen sub" start here
    pool, n = no_sub_rule, 0
    if crowd is not None:  # the crowd's images first, then the validation images, as `few` holds them
        extra = predict(crowd, out.space, score, m["threshold_super"], -math.inf)
        pool, n = tuple(torch.cat([e, v]) for e, v in zip(extra, no_sub_rule)), len(crowd.super_logits)
    rows = [{"fold": fold, "method": "superclass rule only", **_metrics(out, *no_sub_rule)},
            {"fold": fold, "method": "per-image rule", **{k: m[k] for k in KEYS}}]
    runs = [(f"neighbours at {keep}", {"keep": keep}) for keep in keeps]
    runs += [(f"neighbours + {k} new clusters", {"new_clusters": k}) for k in new_clusters]
    runs += [(f"{k} new clusters alone", {"new_clusters": k, "neighbours": 0}) for k in new_clusters]
    runs += [("silhouette clusters alone", {"new_clusters": None, "neighbours": 0})]
    runs += [(f"neighbours at {NEIGHBOUR_KEEP}, backbone features alone", {"backbone_only": True})]
    few = out if bank_per_class is None else out.with_bank(_per_class(out.bank_sub_target, bank_per_class, fold))
    if crowd is not None:
        both = {k: torch.cat([getattr(crowd, k), getattr(out, k)]) for k in ("backbone_feats", "ref_feats")
                if getattr(out, k) is not None}
        few = replace(few, _cache={}, **both)
    for name, kw in runs:
        t0 = time.perf_counter()
        seen_as = replace(few, _cache={}, ref_feats=None) if kw.pop("backbone_only", False) else few
        d = discover(seen_as, *pool, max_new, **kw)  # as `predict --discover`: no subclass threshold
        rows.append({"fold": fold, "method": f"discover ({name})", **_metrics(out, d.sup[n:], d.sub[n:]),
                     "groups": str(d.new_clusters), "novel super groups": d.novel_super_clusters,
                     "s": time.perf_counter() - t0})
    return rows


def _per_class(target: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Keep n random bank images of each subclass: the folder (a validation split: ~6 images per seen
    subclass beside ~56 in the bank) then holds as many of each seen subclass as the bank does or more, as a
    real folder of test images may."""
    g, keep = torch.Generator().manual_seed(seed), torch.zeros(len(target), dtype=torch.bool)
    for c in target.unique():
        rows = torch.nonzero(target == c).flatten()
        keep[rows[torch.randperm(len(rows), generator=g)[:n]]] = True
    return keep


def _metrics(out: Outputs, sup, sub) -> dict:
    res = {}
    for lvl, pred in (("super", sup), ("sub", sub)):
        acc = accuracy(pred, out.target(lvl))
        res[f"seen_{lvl}_acc"], res[f"novel_{lvl}_acc"] = acc["seen_acc"], acc["novel_acc"]
    res[NEW_SUB], res[NEW_BREED_SUPER] = new_subclass_acc(out, sub), new_breed_as_novel_super(out, sup)
    return {k: res[k] for k in KEYS}


def _crowd(trial: str, images: str) -> Outputs:
    """The trial checkpoint's (fold 0's) outputs for every image of a folder, as `predict` computes them."""
    from hier_tl.data.images import decode_images, list_images
    from hier_tl.predict.predict import Predictor

    p = Predictor.from_checkpoint(trial)
    return p.outputs(decode_images(list_images(images), p.data_side, use_cache=False).images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--outputs", help="saved fold outputs (bench/quality.py --save-outputs)")
    src.add_argument("--trial", help="a sweep trial's checkpoint.pt: its folds' validation outputs, no training")
    ap.add_argument("--data", help="with --trial: the dataset folder it was trained on")
    ap.add_argument("--score", default="pretrained_hier")
    ap.add_argument("--threshold", default="tpr:0.985/tpr:0.965")
    ap.add_argument("--max-new", type=int, default=8, help="most extra clusters the silhouette may choose")
    ap.add_argument("--new-clusters", type=int, nargs="*", default=[10],
                    help="also k-means with this many extra clusters per superclass (over-clustering), with the "
                    "neighbour rule and alone")
    ap.add_argument("--keep", type=float, nargs="*", default=[NEIGHBOUR_KEEP],
                    help="the neighbour rule's share of training images kept (its threshold)")
    ap.add_argument("--with-images", metavar="DIR", help="with --trial: DIR's images, predicted by the trial's "
                    "checkpoint (fold 0's model), join fold 0's pool (a test folder's crowd); fold 0 only")
    ap.add_argument("--bank-per-class", type=int, metavar="N",
                    help="discovery sees only N training images per subclass (the rules keep the whole bank): "
                    "a folder larger than the bank, per class")
    args = ap.parse_args()
    import pandas as pd

    if args.trial:
        from hier_tl.core.config import from_dict
        from hier_tl.data.dataset import load_dataset
        from hier_tl.train import checkpoint
        from hier_tl.train.train_config import TrainConfig
        from hier_tl.train.trainer import fit

        if not args.data:
            ap.error("--trial needs --data, the dataset folder the trial was trained on")
        ckpt = checkpoint.load(args.trial)  # resumed after its last epoch: every fold validated once, no training
        outs = fit(from_dict(TrainConfig, ckpt["config"]), load_dataset(args.data), resume=ckpt).fold_outputs
    else:
        outs = [Outputs.from_dict(d) for d in torch.load(args.outputs, weights_only=True)]
    crowd = None
    if args.with_images:
        if not args.trial:
            ap.error("--with-images needs --trial: its checkpoint predicts the images")
        outs, crowd = outs[:1], _crowd(args.trial, args.with_images)
    counts, keeps = tuple(args.new_clusters), tuple(args.keep)
    df = pd.DataFrame([r for f, o in enumerate(outs)
                       for r in rows_for(o, args.score, args.threshold, args.max_new, f, counts, keeps,
                                         args.bank_per_class, crowd)])
    pd.set_option("display.width", 250)
    print(df.round(4).to_string(index=False))
    g = df.groupby("method", sort=False)[list(KEYS)]
    print((g.mean().round(3).astype(str) + " +- " + g.std(ddof=0).round(3).astype(str)).to_string())


if __name__ == "__main__":
    main()
