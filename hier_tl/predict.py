"""Pick the best trial of a sweep, and write the final predictions CSV (`image,superclass_index,subclass_index`)."""

from __future__ import annotations

import csv
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml

from .data import load_images
from .split import LabelSpace
from .train import infer, load_checkpoint, model_from_checkpoint


class SelectionError(ValueError):
    """No trial matches, the metric does not exist, or a folder is not a sweep or run folder."""


def load_sweep_results(results_dir: Path | str) -> tuple[pd.DataFrame, dict]:
    d = Path(results_dir)
    if not (d / "trials.parquet").is_file():
        raise SelectionError(f"{d}: no trials.parquet here (expected a sweep results folder, <storage>/<name>/)")
    meta = yaml.safe_load((d / "sweep.yaml").read_text()) if (d / "sweep.yaml").is_file() else {}
    return pd.read_parquet(d / "trials.parquet"), meta


def metric_column(trials: pd.DataFrame, metric: str) -> str:
    for col in (f"final_{metric}", metric):
        if col in trials:
            return col
    options = sorted(c.removeprefix("final_") for c in trials.columns if c.startswith("final_"))
    raise SelectionError(f"no metric {metric!r} in trials.parquet; metrics: {', '.join(options)}")


def select_best(trials: pd.DataFrame, metric: str = "objective", mode: str | None = None,
                where: list[str] | None = None) -> pd.Series:
    """The best trial (by its final-epoch metric) among those matching every `key=value` in `where`."""
    col = metric_column(trials, metric)
    df = trials
    for cond in where or []:
        if "=" not in cond:
            raise SelectionError(f"--where {cond!r}: expected key=value")
        key, value = cond.split("=", 1)
        if key not in df:
            raise SelectionError(f"--where {key}: no such column in trials.parquet")
        df = df[df[key].astype(str) == value]
    df = df[df[col].notna()]
    if df.empty:
        raise SelectionError(f"no trial with a value for {metric!r} matches {' and '.join(where or []) or 'anything'}")
    mode = mode or ("min" if "loss" in metric else "max")
    return df.loc[df[col].idxmax() if mode == "max" else df[col].idxmin()]


def trial_checkpoint(results_dir: Path | str, trial: pd.Series) -> Path:
    tdir = Path(results_dir) / str(trial.get("trial_dir") or "")
    ckpts = sorted(tdir.glob("checkpoint_*/checkpoint.pt")) if tdir.name else []
    if not ckpts:
        raise SelectionError(f"trial {trial['trial_id']} has no checkpoint under {tdir}")
    return ckpts[-1]


@dataclass
class Predictor:
    model: torch.nn.Module
    space: LabelSpace
    norm: tuple
    size: int
    data_side: int
    score: str
    thr_super: float
    thr_sub: float
    precision: str = "auto"
    bank: torch.Tensor | None = None  # training features, for feature-space scores
    tta: bool = False  # mirror-image averaging, as the model was validated

    @classmethod
    def from_checkpoint(cls, path: Path | str, threshold: float | None = None, device: str = "cpu") -> "Predictor":
        ckpt = load_checkpoint(path)
        model, cfg, space, norm = model_from_checkpoint(ckpt, device)
        last = ckpt["history"][-1] if ckpt.get("history") else {}
        thr_sup = threshold if threshold is not None else last.get("threshold_super", _number(cfg.threshold))
        thr_sub = threshold if threshold is not None else last.get("threshold_sub", _number(cfg.threshold))
        side = int(ckpt.get("data_side", 64))
        return cls(model, space, norm, cfg.image_size or side, side, cfg.novelty_score, float(thr_sup), float(thr_sub),
                   cfg.precision, ckpt.get("bank"), cfg.tta)

    def predict(self, images: torch.Tensor, batch: int = 512, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images -> mapping-file indices (novel indices where novel), both levels."""
        from .novelty import predict as rule

        size = self.size
        sups, subs = [torch.empty(0, dtype=torch.int64)], [torch.empty(0, dtype=torch.int64)]
        t0 = time.time()
        for start in range(0, len(images), batch):
            a, b, f = infer(self.model, images[start:start + batch], self.norm, size, batch, self.precision,
                            self.tta)
            s, u = rule(a, b, self.space, self.score, self.thr_super, self.thr_sub, f, self.bank)
            sups.append(s)
            subs.append(u)
            if progress:
                _bar(min(start + batch, len(images)), len(images), time.time() - t0)
        return self.space.decode(torch.cat(sups), torch.cat(subs))


def _number(spec) -> float:
    try:
        return float(spec)
    except (TypeError, ValueError):
        return 0.5  # only reached for checkpoints without history


def _bar(done: int, total: int, elapsed: float) -> None:
    width = 30
    fill = int(width * done / max(total, 1))
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\rpredict [{'#' * fill}{'.' * (width - fill)}] {done}/{total} images {elapsed:5.1f}s{end}")
    sys.stderr.flush()


def write_predictions(predictor: Predictor, images_dir: Path | str, out: Path | str) -> int:
    """Predict every decodable image in `images_dir`; unreadable ones are reported and skipped. Returns rows written."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imgs = load_images(images_dir, predictor.data_side)  # decoded as the training images were
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if not imgs.names:
        print(f"warning: no readable image in {images_dir}: writing a header-only CSV", file=sys.stderr)
    if imgs.failed:
        print(f"warning: {len(imgs.failed)} image(s) could not be read and have no prediction: "
              f"{', '.join(list(imgs.failed)[:10])}", file=sys.stderr)
    sup, sub = predictor.predict(imgs.images)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "superclass_index", "subclass_index"])
        w.writerows(zip(imgs.names, sup.tolist(), sub.tolist()))
    tmp.replace(out)
    return len(imgs.names)


def refit(results_dir: Path, trial: pd.Series, meta: dict, data_dir: str | None) -> Path:
    """Retrain the trial's config on train + validation (no hold-out) for the epochs it ran; returns the checkpoint."""
    from .config import TrainConfig
    from .sweep import SweepConfig
    from .config import from_dict
    from .train import atomic_save, fit
    from .tune import prepare_data

    cfg = from_dict(TrainConfig, load_checkpoint(trial_checkpoint(results_dir, trial))["config"])
    sweep = from_dict(SweepConfig, {k: v for k, v in meta.items() if k in SweepConfig.__dataclass_fields__})
    if data_dir:
        sweep.data = data_dir
    thr = float(trial.get("final_threshold_super", math.nan))
    refit_cfg = cfg.replace(epochs=int(trial["epochs_run"]), val_fraction=0.0, holdout_subclasses=0,
                            holdout_superclasses=0, threshold=thr if math.isfinite(thr) else cfg.threshold)
    thresholds = (thr, float(trial.get("final_threshold_sub", thr)))
    print(f"refit: {refit_cfg.backbone}/{refit_cfg.depth} for {refit_cfg.epochs} epochs on train + validation")
    data = prepare_data(sweep)
    out = results_dir / "refit" / str(trial["trial_id"])
    saved = {}
    fit(refit_cfg, data, lambda m, save, o: saved.__setitem__("p", save(out)))
    if all(math.isfinite(t) for t in thresholds):  # keep the per-level thresholds the sweep calibrated
        ckpt = load_checkpoint(saved["p"])
        ckpt["history"][-1].update(threshold_super=thresholds[0], threshold_sub=thresholds[1])
        atomic_save(ckpt, saved["p"])
    return saved["p"]
