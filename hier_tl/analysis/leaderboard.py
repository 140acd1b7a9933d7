"""Scoring a predictions CSV as the leaderboard does: per level, accuracy overall, on seen-class images and
on novel images (`hier-tl score`)."""

from __future__ import annotations

import torch

from ..core.errors import ScoreError
from ..data.taxonomy import NOVEL
from ..train.metrics import accuracy


def _read_labels_csv(path, what: str):
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise ScoreError(f"{path}: cannot read {what} CSV ({e})") from None
    cols = ["image", "superclass_index", "subclass_index"]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ScoreError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(cols)}")
    dup = df["image"][df["image"].duplicated()]
    if len(dup):
        raise ScoreError(f"{path}: image(s) listed more than once: {', '.join(dup.head(5))}")
    for c in cols[1:]:
        bad = df[~df[c].str.strip().str.fullmatch(r"-?\d+")]
        if len(bad):
            raise ScoreError(f"{path} line {bad.index[0] + 2}: {c} {bad[c].iloc[0]!r} is not an integer")
        df[c] = df[c].astype(int)
    return df[cols].set_index("image")


def score_predictions(pred_csv, labels_csv, novel_super: int, novel_sub: int) -> dict[str, float]:
    """Leaderboard scoring: per level, accuracy overall / on seen-class images / on novel images.

    An image is "novel" at a level when its true label there is the novel index; its prediction is right
    only when it is exactly the novel index.
    """
    pred, lab = _read_labels_csv(pred_csv, "predictions"), _read_labels_csv(labels_csv, "labels")
    unknown = pred.index.difference(lab.index)
    if len(unknown):
        raise ScoreError(f"{pred_csv}: {len(unknown)} image(s) not in the labels, e.g. {', '.join(unknown[:5])}")
    missing = lab.index.difference(pred.index)
    if len(missing):
        raise ScoreError(f"{pred_csv}: no prediction for {len(missing)} labelled image(s), e.g. {', '.join(missing[:5])}")
    pred = pred.loc[lab.index]
    out = {}
    for lvl, col, novel in (("super", "superclass_index", novel_super), ("sub", "subclass_index", novel_sub)):
        t = torch.tensor(lab[col].to_numpy())
        p = torch.tensor(pred[col].to_numpy())
        # a literal -1 in a file is just a wrong index, never "novel": map it out of the way first
        p = torch.where(p == NOVEL, novel + 10**9, p)
        t, p = torch.where(t == novel, NOVEL, t), torch.where(p == novel, NOVEL, p)
        for k, v in accuracy(p, t).items():
            out[f"{lvl}_{k}"] = v
    out["n"] = len(lab)
    return out
