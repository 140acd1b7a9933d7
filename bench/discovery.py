"""Category discovery (`predict --discover`) validated: each validation split is the unlabelled set.

    python bench/discovery.py --outputs .cache/s0.pt             # saved fold outputs (bench/quality.py --save-outputs)
    python bench/discovery.py --outputs s0.pt --score pretrained_hier --threshold tpr:0.99/tpr:0.965
    python bench/discovery.py --outputs s0.pt --new-clusters 4 6 8   # k-means clusters on top, per superclass
    python bench/discovery.py --outputs s0.pt --keep 0.98 0.99 0.995  # the neighbour rule's threshold
    python bench/discovery.py --trial SWEEP/TRIAL/checkpoint_000004/checkpoint.pt --data DATA   # a sweep trial

Per fold: the superclass rule alone (the seen-subclass accuracy a subclass rule costs points of), the per-image
rule (score at threshold), then discovery in place of its subclass threshold (`hier_tl.train.clusters`): the neighbour rule
(`predict --discover`), the same with k-means clusters (`--discover K`), and the clusters alone,
with the new breeds caught as novel subclasses, seen-subclass accuracy, novel superclass caught and the new
breeds called a novel superclass; the novel-subclass clusters found per superclass (the protocol holds out
3 subclasses of each seen superclass); mean +- spread over folds.
"""

from __future__ import annotations

import argparse
import math
import time

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
             new_clusters: tuple[int, ...] = (), keeps: tuple[float, ...] = (NEIGHBOUR_KEEP,)) -> list[dict]:
    m = evaluate(out, out.space, score, threshold)
    no_sub_rule = predict(out, out.space, score, m["threshold_super"], -math.inf)  # "points of seen sub" start here
    rows = [{"fold": fold, "method": "superclass rule only", **_metrics(out, *no_sub_rule)},
            {"fold": fold, "method": "per-image rule", **{k: m[k] for k in KEYS}}]
    runs = [(f"neighbours at {keep}", {"keep": keep}) for keep in keeps]
    runs += [(f"neighbours + {k} new clusters", {"new_clusters": k}) for k in new_clusters]
    runs += [(f"{k} new clusters alone", {"new_clusters": k, "neighbours": 0}) for k in new_clusters]
    runs += [("silhouette clusters alone", {"new_clusters": None, "neighbours": 0})]
    for name, kw in runs:
        t0 = time.perf_counter()
        d = discover(out, *no_sub_rule, max_new, **kw)  # as `predict --discover`: no subclass threshold
        rows.append({"fold": fold, "method": f"discover ({name})", **_metrics(out, d.sup, d.sub),
                     "groups": str(d.new_clusters), "novel super groups": d.novel_super_clusters,
                     "s": time.perf_counter() - t0})
    return rows


def _metrics(out: Outputs, sup, sub) -> dict:
    res = {}
    for lvl, pred in (("super", sup), ("sub", sub)):
        acc = accuracy(pred, out.target(lvl))
        res[f"seen_{lvl}_acc"], res[f"novel_{lvl}_acc"] = acc["seen_acc"], acc["novel_acc"]
    res[NEW_SUB], res[NEW_BREED_SUPER] = new_subclass_acc(out, sub), new_breed_as_novel_super(out, sup)
    return {k: res[k] for k in KEYS}


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
    counts, keeps = tuple(args.new_clusters), tuple(args.keep)
    df = pd.DataFrame([r for f, o in enumerate(outs)
                       for r in rows_for(o, args.score, args.threshold, args.max_new, f, counts, keeps)])
    pd.set_option("display.width", 250)
    print(df.round(4).to_string(index=False))
    g = df.groupby("method", sort=False)[list(KEYS)]
    print((g.mean().round(3).astype(str) + " +- " + g.std(ddof=0).round(3).astype(str)).to_string())


if __name__ == "__main__":
    main()
