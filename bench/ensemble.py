"""Ensembles (`predict --ensemble K`) validated on saved fold outputs of runs that share a protocol and split.

    python bench/ensemble.py .cache/l64.pt .cache/l64s1.pt    # two seeds of bench/quality.py --folds 3 --save-outputs

Per fold: each member alone and the ensemble of all (`hier_tl.train.combine`), every score in SCORES (with
`disagreement` for the ensemble) at every rule in RULES; mean +- spread over folds. Closed-set accuracy
(no novelty rule) first, since averaging probabilities moves it too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hier_tl.train.combine import combine
from hier_tl.train.metrics import NEW_BREED_SUPER, NEW_SUB, evaluate, threshold_rows
from hier_tl.train.outputs import Outputs

SCORES = ("msp", "fusion", "pretrained_hier", "pretrained_hier_hgauss")
RULES = ("tpr:0.99/tpr:0.965", "tpr:0.99/tpr:0.95", "tpr:0.985/tpr:0.965")
KEYS = ["seen_super_acc", "novel_super_acc", "seen_sub_acc", "novel_sub_acc", NEW_SUB, NEW_BREED_SUPER, "auroc_sub"]


def rows_for(name: str, out: Outputs, fold: int, scores) -> list[dict]:
    closed = evaluate(out, out.space, "msp", -1e9)
    rows = [{"model": name, "fold": fold, "score": "(closed set)", "threshold": "-",
             **{k: closed.get(k) for k in ("seen_super_acc", "seen_sub_acc")}}]
    return rows + [{"model": name, "fold": fold, **r} for r in threshold_rows(out, scores, RULES)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outputs", nargs="+", help="saved fold outputs of each member (bench/quality.py --save-outputs)")
    args = ap.parse_args()
    import pandas as pd

    runs = {Path(p).stem: [Outputs.from_dict(d) for d in torch.load(p, weights_only=True)] for p in args.outputs}
    rows = []
    for fold, members in enumerate(zip(*runs.values())):
        for name, out in zip(runs, members):
            rows += rows_for(name, out, fold, SCORES)
        rows += rows_for(f"ensemble of {len(members)}", combine(list(members)), fold, (*SCORES, "disagreement"))
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_rows", 500)
    g = df.groupby(["model", "score", "threshold"], sort=False)[[k for k in KEYS if k in df]]
    print((g.mean().round(3).astype(str) + " +- " + g.std(ddof=0).round(3).astype(str)).to_string())


if __name__ == "__main__":
    main()
