"""Accuracy on a real dataset: closed-set quality and open-set novelty, from the shared trainer.

    python bench/quality.py --data ../shared/data/nndl64 --runs cnn15 openset_sub openset_super lite0_openset_sub
    python bench/quality.py --runs lite0_64 --folds 3     # rotating protocol, every score x rule per fold
    python bench/quality.py --reference-only 0 1 2 3 4    # pretrained_* superclass level and its calibrations, no training

Each run trains once, then re-scores its final validation logits with every novelty score and threshold
rule (no retraining), printing seen / novel accuracy at both levels and the AUROC of each score.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from hier_tl.data.dataset import load_dataset
from hier_tl.data.split import make_split
from hier_tl.train.metrics import evaluate
from hier_tl.train.novelty import logit_scores, needs_reference
from hier_tl.train.train_config import TrainConfig
from hier_tl.train.trainer import BANK_SIZE, fit, infer

SCORES = (*logit_scores(), "knn", "knn_backbone", "mahalanobis", "vim", "fusion", "hier", "pretrained_knn",
          "pretrained_mahalanobis", "pretrained_hier", "pretrained_hgauss", "pretrained_hier_hgauss")

RUNS = {
    "cnn10": dict(backbone="cnn", epochs=10),
    "cnn15": dict(backbone="cnn", epochs=15),
    "cnn15_reg": dict(backbone="cnn", epochs=15, batch_size=32, dropout=0.5),  # the best cnn recipe measured
    "openset_sub": dict(backbone="cnn", epochs=15, holdout_subclasses=3),
    "openset_super": dict(backbone="cnn", epochs=15, holdout_superclasses=1),
    "lite0_imagenet": dict(backbone="efficientnet_lite0", weights="imagenet", depth="full", epochs=5,
                           image_size=96, lr=1e-3, batch_size=64),
    "lite0_scratch": dict(backbone="efficientnet_lite0", weights="none", depth="full", epochs=5,
                          image_size=96, lr=1e-3, batch_size=64),
}
LITE0 = dict(backbone="efficientnet_lite0", weights="imagenet", depth="full", epochs=5, image_size=96, lr=1e-3,
             batch_size=64)
OPENSET = {**LITE0, "image_size": 128, "tta": True}  # the open-set recipe (sweeps/openset.yaml)
RUNS.update(lite0_openset_sub={**OPENSET, "holdout_subclasses": 3},
            lite0_openset_super={**OPENSET, "holdout_superclasses": 1})
RUNS["lite0_64"] = {**LITE0, "image_size": 64, "epochs": 4, "tta": True}  # native 64 px: 4x cheaper on a CPU
RULES = ("tpr:0.99/tpr:0.965", "tpr:0.99/tpr:0.95", "tpr:0.985/tpr:0.965", "tpr:0.985", "tpr:0.98", "tpr:0.95",
         "tpr:0.9", "best", 0.6)


def closed_set(res, ds, cfg: TrainConfig, tta: bool) -> dict:
    """Plain accuracy (no novelty rule) of the trained model, with or without mirror-image TTA."""
    if tta == cfg.tta:  # the trainer's own final validation pass
        return evaluate(res.outputs, res.space, "msp", -1e9)
    split = make_split(ds, cfg.val_fraction, cfg.split_seed, cfg.holdout_subclasses, cfg.holdout_superclasses)
    sup, sub, *_ = infer(res.model, ds.images[split.val], res.norm, cfg.image_size or ds.images.shape[-1],
                        cfg.eval_batch_size, cfg.precision, tta)
    out = dataclasses.replace(res.outputs, super_logits=sup, sub_logits=sub, feats=None, bank=None, _cache={})
    return evaluate(out, res.space, "msp", -1e9)


def run(name: str, ds, extra: dict) -> list[dict]:
    cfg = TrainConfig(**{**RUNS[name], **extra})
    t0 = time.time()
    res = fit(cfg, ds, scores=SCORES, report=lambda r: print(
        f"  {name} epoch {r.metrics['epoch']}: seen super {r.metrics['seen_super_acc']:.3f} sub "
        f"{r.metrics['seen_sub_acc']:.3f} ({r.metrics['epoch_time']:.0f} s)", flush=True))
    rows = []
    for score in SCORES:
        for rule in RULES:
            m = evaluate(res.outputs, res.space, score, rule, SCORES)
            rows.append({"run": name, "score": score, "threshold": str(rule), **{k: m[k] for k in (
                "seen_super_acc", "seen_sub_acc", "novel_super_acc", "novel_sub_acc")},
                "auroc_super": m[f"auroc_super_{score}"], "auroc_sub": m[f"auroc_sub_{score}"],
                "minutes": (time.time() - t0) / 60})
    for tta in (False, True):
        closed = closed_set(res, ds, cfg, tta)
        print(f"{name}: closed-set{' (tta)' if tta else ''} seen super {100 * closed['seen_super_acc']:.2f}%, "
              f"seen sub {100 * closed['seen_sub_acc']:.2f}% ({(time.time() - t0) / 60:.1f} min)", flush=True)
    return rows


def protocol(name: str, ds, extra: dict, folds: int, save: str | None = None) -> list[dict]:
    """Rotating validation: `folds` models in lockstep (each holds out a different superclass and a fresh
    draw of subclasses); every score x rule re-scored on each fold's final outputs; rows per fold."""
    cfg = TrainConfig(**{**RUNS[name], "holdout_superclasses": 1, "holdout_subclasses": 3, **extra, "folds": folds})
    t0, last = time.time(), {}

    def report(r):
        last["outs"] = r.fold_outputs
        m = r.metrics
        print(f"  {name} x{folds} folds, epoch {m['epoch']}: objective {m['objective']:.3f} +- "
              f"{m.get('objective_std', 0):.3f}; {cfg.novelty_score} at {cfg.threshold}: novel super "
              f"{m['novel_super_acc']:.3f} +- {m.get('novel_super_acc_std', 0):.3f}, novel sub {m['novel_sub_acc']:.3f}, "
              f"seen sub {m['seen_sub_acc']:.3f} ({m['epoch_time']:.0f} s)", flush=True)
    fit(cfg, ds, report)  # the config's own score each epoch; every score is re-scored on the final outputs below
    if save:
        torch.save([o.to_dict() for o in last["outs"]], save)
        print(f"  saved the folds' final outputs to {save} (re-score with --rescore {save})", flush=True)
    print(f"{name}: {(time.time() - t0) / 60:.1f} min", flush=True)
    return rescore(name, last["outs"])


def rescore(name: str, outs) -> list[dict]:
    """Every score x rule on each fold's outputs (no model needed), timing each score once per fold."""
    from hier_tl.train.metrics import threshold_rows

    rows = []
    for fold, out in enumerate(outs):
        for score in SCORES:
            if needs_reference(score) and out.ref_feats is None:
                continue  # outputs saved before reference features existed
            out._cache.clear()  # time the score from scratch (fusion and hier recompute their parts)
            t1 = time.perf_counter()
            out.score(score, "super"), out.score(score, "sub")
            cost = time.perf_counter() - t1
            for row in threshold_rows(out, (score,), RULES):
                rows.append({"run": name, "fold": fold, **row, "score_s": cost})
    return rows


REFERENCE_SCORES = ("pretrained_knn", "pretrained_mahalanobis", "pretrained_hgauss")
SUPER_TPR = (0.985, 0.99)


def reference_only(ds, extra: dict, folds: int, seeds: list[int]) -> list[dict]:
    """The superclass level of the pretrained scores alone, which needs no training: per split seed x fold
    (one superclass and 3 subclasses per superclass held out, rotated), the AUROC against the held-out
    superclass, and at thresholds keeping P of the seen-superclass images (`SUPER_TPR`) the novel superclass
    caught, the seen superclass kept and the new breeds called a novel superclass, for three calibrations:
    `val` on validation with the new breeds (a sweep's), `known` on images of trained subclasses alone (a
    refit's until now), `margin` at the mean `super_margin` of the other folds (a refit's now)."""
    from hier_tl.train.metrics import auroc, margin_of, threshold_at_margin
    from hier_tl.train.outputs import Outputs
    from hier_tl.train.registries import SCORES as REGISTRY
    from hier_tl.train.trainer import reference_features

    cfg = TrainConfig(**{"holdout_superclasses": 1, "holdout_subclasses": 3, **extra})
    t0 = time.time()
    ref = reference_features(cfg, ds.images)
    print(f"reference features ({cfg.reference_backbone}, {cfg.reference_size} px): {time.time() - t0:.0f} s "
          "(0 when cached)", flush=True)
    folds_seen = []
    for seed in seeds:
        for fold in range(folds):
            sp = make_split(ds, cfg.val_fraction, seed, cfg.holdout_subclasses, cfg.holdout_superclasses, fold)
            y_sup, y_sub = sp.space.encode(ds.superclass, ds.subclass)
            bank = sp.train[:BANK_SIZE]
            out = Outputs(torch.empty(0), torch.empty(0), space=sp.space, ref_feats=ref[sp.val], bank_ref=ref[bank],
                          bank_sub_target=y_sub[bank])
            held = ", ".join(ds.taxonomy.superclass.names[s] for s in sp.held_out_supers)
            seen = y_sup[sp.val] != -1
            for score in REFERENCE_SCORES:
                s = REGISTRY.get(score)(out, "super")  # no fine-tuned features: the registry entry itself
                folds_seen.append({"seed": seed, "fold": fold, "held_out": held, "score": score, "s": s, "seen": seen,
                                   "breed": seen & (y_sub[sp.val] == -1), "auroc_super": auroc(s, seen)})
    rows = []
    for f in folds_seen:
        known = f["s"][f["seen"] & ~f["breed"]]
        row = {k: f[k] for k in ("seed", "fold", "held_out", "score", "auroc_super")}
        for p in SUPER_TPR:
            others = [margin_of(o["s"][o["seen"] & ~o["breed"]], torch.quantile(o["s"][o["seen"]], 1 - p))
                      for o in folds_seen if o["score"] == f["score"] and o is not f]
            for how, thr in (("val", torch.quantile(f["s"][f["seen"]], 1 - p)), ("known", torch.quantile(known, 1 - p)),
                             ("margin", threshold_at_margin(known, sum(others) / max(1, len(others))))):
                row.update(_caught(f, float(thr), f"{how}{p}"))
        rows.append(row)
    return rows


def _caught(f: dict, thr: float, tag: str) -> dict:
    s, seen, breed = f["s"], f["seen"], f["breed"]
    return {f"novel_super@{tag}": float((s[~seen] < thr).float().mean()),
            f"kept@{tag}": float((s[seen] >= thr).float().mean()),
            f"breed_as_super@{tag}": float((s[breed] < thr).float().mean())}


def summarise(df):
    """Mean and spread over folds per score x threshold rule."""
    keys = ["seen_super_acc", "novel_super_acc", "seen_sub_acc", "novel_sub_acc", "novel_sub_seen_super_acc",
            "new_breed_as_novel_super",
            "auroc_super", "auroc_sub", "score_s"]
    g = df.groupby(["run", "score", "threshold"], sort=False)[keys]
    mean, std = g.mean(), g.std(ddof=0)
    return mean.round(3).astype(str) + " +- " + std.round(3).astype(str)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "nndl64"))
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override TrainConfig keys for every run")
    ap.add_argument("--folds", type=int, default=0, help="rotating protocol: this many folds per run (one "
                    "superclass and 3 subclasses per superclass held out, rotated), per-fold rows and mean +- spread")
    ap.add_argument("--csv", help="also write the rows to this CSV")
    ap.add_argument("--save-outputs", help="with --folds: save the folds' final outputs (.pt) to re-score later")
    ap.add_argument("--rescore", help="re-score saved fold outputs (from --save-outputs) with every score x rule; "
                    "no training")
    ap.add_argument("--reference-only", nargs="*", type=int, metavar="SEED", help="no training: the superclass "
                    "level of the pretrained_* scores over these split seeds (default 0) x --folds (default 3) folds")
    args = ap.parse_args()
    from hier_tl.core.config import parse_value

    extra = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    import pandas as pd

    pd.set_option("display.width", 250)
    pd.set_option("display.max_rows", 500)
    if args.reference_only is not None:
        ds = load_dataset(args.data)
        df = pd.DataFrame(reference_only(ds, extra, args.folds or 3, args.reference_only or [0]))
        print(df.round(4).to_string(index=False))
        keys = [c for c in df.columns if c == "auroc_super" or "@" in c]
        print(df.groupby("score", sort=False)[keys].agg(["mean", "std", "min", "max"]).round(3).T.to_string())
    elif args.rescore:
        from hier_tl.train.outputs import Outputs

        outs = [Outputs.from_dict(d) for d in torch.load(args.rescore, weights_only=True)]
        df = pd.DataFrame(rescore(Path(args.rescore).stem, outs))
        print(df.round(4).to_string(index=False))
        print(summarise(df).to_string())
    elif args.folds:
        ds = load_dataset(args.data)
        df = pd.DataFrame([r for name in args.runs for r in protocol(name, ds, extra, args.folds, args.save_outputs)])
        print(df.round(4).to_string(index=False))
        print(summarise(df).to_string())
    else:
        ds = load_dataset(args.data)
        df = pd.DataFrame([r for name in args.runs for r in run(name, ds, extra)])
        print(df.round(4).to_string(index=False))
    if args.csv:
        df.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
