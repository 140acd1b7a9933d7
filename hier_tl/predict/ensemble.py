"""`predict --ensemble K`: the K best trials of one validation protocol predict as one model.

Each member runs on the images; `train.combine.combine` averages their probabilities and joins their
features, so any novelty score (the trials' own, or `disagreement`, the members' mutual information) reads
the ensemble. Thresholds are the members' rule resolved again on the ensemble: on the validation split the
members share (their protocol, fold 0), or with `--refit` on the refits' held-back images, where the
superclass level keeps the trials' mean `super_margin` (`refit._transfer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import pandas as pd
import torch

from ..core.config import from_dict
from ..core.errors import SelectionError
from ..data.split import make_split
from ..data.synthetic import SynthSpec, load_source
from ..results.protocols import decision, within
from ..results.reading import Results, load_results, metric_column, trial_checkpoint
from ..train.combine import combine
from ..train.metrics import NEW_BREED_SUPER, NEW_SUB, evaluate, threshold_at_margin, thresholds_for
from ..train.train_config import NOVELTY_KEYS, TrainConfig
from .predict import Predictor, decide, write_predictions
from .refit import refit


def top_trials(trials: pd.DataFrame, metric: str, mode: str, protocol: str, k: int = 3) -> list[pd.Series]:
    """The `k` best trials of validation `protocol` (a `protocol_label`) by final-epoch `metric` (`mode`), among
    those with a finite value; ties go to the earlier trial. A trial whose training config equals a better
    one's (they differ only in novelty score or threshold, so they share one trained model) is no new member.
    SelectionError when none has a value."""
    col = metric_column(trials, metric)
    same = within(trials, protocol)
    values = pd.to_numeric(same[col], errors="coerce")
    same = same[values.notna() & values.map(math.isfinite)]
    if same.empty:
        raise SelectionError(f"no trial of protocol {protocol!r} has a value for {metric!r} to rank an ensemble by")
    order = pd.to_numeric(same[col]).sort_values(ascending=(mode == "min"), kind="stable").index
    trained = [f.name for f in fields(TrainConfig) if f.name not in NOVELTY_KEYS]
    model = (lambda r: tuple(str(r[c]) for c in trained)) if set(trained) <= set(same.columns) else (lambda r: r.name)
    chosen: dict = {}
    for i in order:
        chosen.setdefault(model(same.loc[i]), same.loc[i])
    return list(chosen.values())[:k]


@dataclass
class EnsemblePredictor:
    """Several `Predictor`s of one protocol as one: `predict(images)` like a single model's."""

    members: list[Predictor]
    score: str
    thr_super: float
    thr_sub: float
    discover: int | str | None = None

    @property
    def data_side(self) -> int:
        return self.members[0].data_side

    def outputs(self, images: torch.Tensor, batch: int = 512, progress: bool = True):
        return combine([m.outputs(images, batch, progress) for m in self.members])

    def predict(self, images: torch.Tensor, batch: int = 512, progress: bool = True):
        return decide(self.outputs(images, batch, progress), self.score, self.thr_super, self.thr_sub, self.discover)


def shared_validation(members: list[Predictor], cfg: TrainConfig, data) -> list:
    """Each member's outputs, with their targets, on the validation images of their protocol (fold 0)."""
    split = make_split(data, cfg.val_fraction, cfg.split_seed, cfg.holdout_subclasses, cfg.holdout_superclasses)
    if len(split.val) < 2:
        raise SelectionError("an ensemble's thresholds are resolved on the members' validation images, and their "
                             "protocol keeps none (val_fraction 0)")
    y_sup, y_sub = members[0].space.encode(data.superclass[split.val], data.subclass[split.val])
    return [replace(m.outputs(data.images[split.val], progress=False), super_target=y_sup, sub_target=y_sub)
            for m in members]


def calibrate(ckpts: list[dict], names: list[str], data, score: str | None = None) -> EnsemblePredictor:
    """Members from checkpoints of one protocol, thresholded by member 0's rule on the ensemble's scores over
    the validation (or refit calibration) images they share."""
    members = [Predictor.from_checkpoint(c, name=n) for c, n in zip(ckpts, names)]
    cfg = from_dict(TrainConfig, ckpts[0]["config"])
    score = score or cfg.novelty_score
    out = combine(shared_validation(members, cfg, data))
    thr = thresholds_for(out, score, cfg.threshold)
    margins = [c.get("calibration", {}).get("super_margin", math.nan) for c in ckpts]
    if all(math.isfinite(m) for m in margins):  # refits: keep room for new breeds (refit._transfer)
        known = out.score(score, "super")[out.super_target != -1]
        thr["super"] = threshold_at_margin(known, sum(margins) / len(margins))
    return EnsemblePredictor(members, score, thr["super"], thr["sub"])


def predict_ensemble(source: str, images: str, out: str, k: int, score: str | None = None, do_refit: bool = False,
                     data_dir: str | None = None, discover: int | str | None = None, log=print,
                     protocol: str | None = None, refit_epochs: int | None = None) -> tuple:
    """`hier-tl predict SWEEP --ensemble K`: the K best trials of the deciding protocol (`--protocol`, the sweep's
    decide_on, or the only one; `results.protocols.decision`), refit first with `do_refit`, thresholds resolved
    on the ensemble, the predictions CSV written."""
    res: Results = load_results(source, tables=())
    label = decision(res.trials, res.meta, protocol)
    trials = top_trials(res.trials, res.metric, res.mode, label, k=k)
    log(f"ensemble of {len(trials)} trial(s) of protocol {label!r}: "
        + ", ".join(t["trial_id"] for t in trials) + (f" (only {len(trials)} of {k})" if len(trials) < k else ""))
    ckpts = [refit(res, t, data_dir, log, epochs=refit_epochs) if do_refit else trial_checkpoint(res.storage, t)[0]
             for t in trials]
    synth = from_dict(SynthSpec, res.meta.get("synthetic") or {})
    data = load_source(data_dir or res.meta.get("data", "synthetic"), synth)
    ens = calibrate(ckpts, [t["trial_id"] for t in trials], data, score)
    ens.discover = discover
    n = write_predictions(ens, images, out)
    log(f"wrote {out}: {n} images (ensemble of {len(trials)}, {ens.score}: superclass {ens.thr_super:.4g}, "
        f"subclass {ens.thr_sub:.4g})")
    return out, n


SCORED = {"objective": "objective", "seen super": "seen_super_acc", "novel super": "novel_super_acc",
          "seen sub": "seen_sub_acc", "novel sub": "novel_sub_acc", "new breeds": NEW_SUB,
          "new breeds as novel super": NEW_BREED_SUPER}


def validate_ensemble(source: str, k: int, data_dir: str | None = None, protocol: str | None = None,
                      log=print) -> pd.DataFrame:
    """What `predict --ensemble K` would score on the validation images its members share (their protocol's
    fold 0): each member alone, then the ensemble, under member 0's novelty score and threshold rule, each
    resolved on those images as the trials resolved theirs. One row per model (`SCORED` columns)."""
    res: Results = load_results(source, tables=())
    label = decision(res.trials, res.meta, protocol)
    trials = top_trials(res.trials, res.metric, res.mode, label, k=k)
    log(f"ensemble on validation: the {len(trials)} best trial(s) of protocol {label!r}")
    ckpts = [trial_checkpoint(res.storage, t)[0] for t in trials]
    synth = from_dict(SynthSpec, res.meta.get("synthetic") or {})
    data = load_source(data_dir or res.meta.get("data", "synthetic"), synth)
    members = [Predictor.from_checkpoint(c, name=t["trial_id"]) for c, t in zip(ckpts, trials)]
    cfgs = [from_dict(TrainConfig, c["config"]) for c in ckpts]
    outs = shared_validation(members, cfgs[0], data)
    named = [*zip((t["trial_id"] for t in trials), outs, cfgs), (f"ensemble of {len(outs)}", combine(outs), cfgs[0])]
    rows = []
    for name, out, cfg in named:  # each member by its own rule, as its trial was scored; the ensemble by member 0's
        m = evaluate(out, out.space, cfg.novelty_score, cfg.threshold)
        rows.append({"model": name, **{col: m.get(key) for col, key in SCORED.items()},
                     "score": cfg.novelty_score, "threshold": str(cfg.threshold)})
    return pd.DataFrame(rows).assign(protocol=label)
