"""Pick the best trial of a sweep, and write the final predictions CSV (`image,superclass_index,subclass_index`)."""

from __future__ import annotations

import contextlib
import csv
import math
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from ..core.errors import SelectionError
from ..core.fileio import atomic_path
from ..core.progressbar import progress as bar
from ..data.images import decode_images, list_images
from ..data.taxonomy import LabelSpace
from ..results.protocols import decision, within
from ..results.reading import (
    Results,
    best_per_variant,
    load_results,
    select,
    threshold_grid,
    trial_checkpoint,
)
from ..results.storage import Storage, local_path
from ..train import checkpoint
from ..train.novelty import needs_reference
from ..train.outputs import Outputs
from ..train.train_config import TrainConfig
from ..train.trainer import infer, reference_features
from .refit import refit


def _bank(saved) -> dict | None:
    """The checkpoint's training bank; checkpoints before backbone-feature scores kept the projection only."""
    return {"bank": saved} if isinstance(saved, torch.Tensor) else saved


UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


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
    bank: dict | None = None  # the training bank (Outputs.bank_state()), for feature-space scores
    tta: bool = False  # mirror-image averaging, as the model was validated
    reference: TrainConfig | None = None  # the trial's config, when its score needs reference features
    discover: int | str | None = None  # transductive category discovery: extra clusters per superclass or 'auto'

    @classmethod
    def from_checkpoint(cls, ckpt: dict | Path | str, threshold: str | float | None = None, device: str = "cpu",
                        name: str = "checkpoint", grid: dict | None = None) -> "Predictor":
        """From a loaded checkpoint (or its path). `threshold`: a rule of the sweep file's grammar (a number,
        SUPER/SUB, `tpr:P`, `best`); None: the per-level values the trial resolved at its last epoch. A `tpr:`
        or `best` rule other than the trial's own needs its validation outputs: a checkpoint file of a run
        folder brings them (val_outputs.pt beside it), a sweep trial its sweep's threshold grid (`grid`,
        `reading.threshold_grid`); `checkpoint.thresholds` refuses it otherwise."""
        outputs = None
        if not isinstance(ckpt, dict):
            path = Path(ckpt) / "checkpoint.pt" if Path(ckpt).is_dir() else Path(ckpt)
            name, outputs, ckpt = str(path), path.with_name(checkpoint.OUTPUTS), checkpoint.load(path)
        model, cfg, space, norm = checkpoint.model_from(ckpt, device, name)
        thr_sup, thr_sub = checkpoint.thresholds(ckpt, cfg, threshold, outputs, name, grid)
        side = int(ckpt.get("data_side", 64))
        return cls(model, space, norm, cfg.image_size or side, side, cfg.novelty_score, float(thr_sup), float(thr_sub),
                   cfg.precision, _bank(ckpt.get("bank")), cfg.tta,
                   cfg if needs_reference(cfg.novelty_score) else None)

    def predict(self, images: torch.Tensor, batch: int = 512, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images -> mapping-file indices (novel indices where novel), both levels."""
        return decide(self.outputs(images, batch, progress), self.score, self.thr_super, self.thr_sub, self.discover)

    def outputs(self, images: torch.Tensor, batch: int = 512, progress: bool = True) -> Outputs:
        """The model's outputs for uint8 images, with the training bank (and reference features) scores need."""
        parts = []
        with bar(len(images), "predict") if progress else contextlib.nullcontext() as counter:
            for start in range(0, len(images), batch):
                parts.append(infer(self.model, images[start:start + batch], self.norm, self.size, batch,
                                   self.precision, self.tta))
                if counter is not None:
                    counter.update(len(images[start:start + batch]))
        if not parts:
            parts.append(infer(self.model, images, self.norm, self.size, batch, self.precision, self.tta))
        a, b, f, h = (torch.cat(p) for p in zip(*parts))
        out = Outputs(a, b, space=self.space, feats=f, backbone_feats=h, **(self.bank or {}))
        if self.reference is not None:
            device = next(self.model.parameters()).device
            out = replace(out, ref_feats=reference_features(self.reference, images.to(device)))
        return out


def decide(out: Outputs, score: str, thr_super: float, thr_sub: float, discover: int | str | None = None):
    """The hierarchy rule on outputs (scored once, all images), then, with `discover`, category discovery over
    them (`train.clusters`, which prints what it found) in place of the subclass threshold; mapping-file
    indices at both levels."""
    from ..train.novelty import predict as rule

    sups, subs = rule(out, out.space, score, thr_super, -math.inf if discover else thr_sub)
    if discover:
        from .discovery import discover_in

        sups, subs = discover_in(out, sups, subs, discover)
    return out.space.decode(sups, subs)




CHUNK = 1024  # images decoded, predicted and written at a time: memory stays flat whatever the folder holds
HEADER = ["image", "superclass_index", "subclass_index"]


def write_predictions(predictor: Predictor, images_dir: Path | str, out: Path | str, chunk: int = CHUNK) -> int:
    """Predict every readable image in `images_dir` into a CSV, streamed: `chunk` images are decoded (as the
    training images were), predicted and written at a time, in file-name order, so the cost is linear in
    the images and memory bounded (with `--discover`, one chunk: the images are clustered together). The CSV
    appears complete or not at all. Every image left out (unreadable,
    or a file name with control characters no CSV reader takes back) is reported. Returns the rows written."""
    paths = list_images(images_dir)
    keep = [p for p in paths if not UNSAFE_NAME.search(p.name) and _encodable(p.name)]
    if getattr(predictor, "discover", False):  # category discovery clusters the folder's images together
        chunk = max(chunk, len(keep))
    if len(keep) < len(paths):
        bad = [p.name for p in paths if p not in set(keep)]
        print(f"warning: {len(bad)} image(s) skipped: their file names hold control characters or bytes that "
              f"are not UTF-8, which a CSV cannot carry safely: {', '.join(ascii(n) for n in bad[:10])}",
              file=sys.stderr)
    failed, written = {}, 0
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        rows = csv.writer(f, lineterminator="\n")
        rows.writerow(HEADER)
        with bar(len(keep), "predict") as counter:
            for start in range(0, len(keep), chunk):
                imgs = decode_images(keep[start:start + chunk], predictor.data_side, use_cache=False)
                failed.update(imgs.failed)
                if imgs.names:
                    sup, sub = predictor.predict(imgs.images, progress=False)
                    rows.writerows(zip(imgs.names, sup.tolist(), sub.tolist()))
                    written += len(imgs.names)
                counter.update(len(keep[start:start + chunk]))
    if failed:
        print(f"warning: {len(failed)} image(s) could not be read and have no prediction: "
              + "; ".join(f"{n} ({why[:80]})" for n, why in list(failed.items())[:10]), file=sys.stderr)
    if not written:
        print(f"warning: no readable image in {images_dir}: wrote a header-only CSV", file=sys.stderr)
    return written


def _encodable(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def chosen_trials(res: Results, trial_id: str | None, all_variants: bool, protocol: str | None = None) -> list[pd.Series]:
    """The trials `predict` uses: one by id, or, within the deciding protocol (`results.protocols.decision`), the
    best of each backbone x depth or the sweep's best."""
    trials = res.trials
    if trial_id:
        match = trials[trials.trial_id == trial_id]
        if match.empty:
            raise SelectionError(f"no trial {trial_id!r} in {res.storage.uri}; trials: {', '.join(trials.trial_id)}")
        return [match.iloc[0]]
    trials = within(trials, decision(trials, res.meta, protocol))
    if all_variants:
        return best_per_variant(trials[trials.epochs_run > 0], res.metric, res.mode)
    return [select(trials, res.metric, res.mode)]


def run(source: str, images: str, out: str, trial_id: str | None = None, threshold: str | float | None = None,
        do_refit: bool = False, data_dir: str | None = None, all_variants: bool = False, epoch: str = "last",
        log=print, protocol: str | None = None, ensemble: int = 0, ensemble_score: str | None = None,
        discover: int | str | None = None, refit_epochs: int | None = None) -> list[tuple]:
    """`hier-tl predict`: a run folder's checkpoint, or trial(s) of a sweep (local or object storage); with
    `ensemble` K, the K best trials of the deciding protocol as one model (`ensemble.py`); with `discover`,
    category discovery over the folder's images (`discovery.py`)."""
    if refit_epochs and not do_refit:
        raise SelectionError("--refit-epochs sets how long a refit trains: add --refit")
    if ensemble:
        from .ensemble import predict_ensemble

        return [predict_ensemble(source, images, out, ensemble, ensemble_score, do_refit, data_dir, discover, log,
                                 protocol, refit_epochs)]
    run_dir = local_path(source)
    if run_dir is not None and (run_dir / "checkpoint.pt").is_file() and not Storage.open(str(run_dir)).has_trials():
        if trial_id or all_variants or do_refit:
            raise SelectionError("--trial, --all-variants and --refit need a sweep results folder, not a run folder")
        jobs = [(run_dir / "checkpoint.pt", str(run_dir / "checkpoint.pt"), Path(out), None)]  # with val_outputs.pt
    else:
        grid_wanted = threshold is not None and not do_refit  # a rule of the sweep's grid may resolve --threshold
        res, jobs = load_results(source, tables=("thresholds",) if grid_wanted else ()), []
        for t in chosen_trials(res, trial_id, all_variants, protocol):
            o = Path(out)
            path = o.with_name(f"{o.stem}_{t['backbone']}_{t['depth']}{o.suffix}") if all_variants else o
            ckpt, where = (refit(res, t, data_dir, log, threshold, refit_epochs), f"refit of {t['trial_id']}") \
                if do_refit else trial_checkpoint(res.storage, t, epoch)
            grid = None if not grid_wanted else \
                threshold_grid(res, t["trial_id"], int(ckpt["epoch"]), ckpt["config"]["novelty_score"])
            log(f"trial {t['trial_id']} ({t['backbone']}/{t['depth']}) -> {path}")
            jobs.append((ckpt, where, path, grid))
    done = []
    for ckpt, where, path, grid in jobs:
        rule = None if do_refit else threshold  # a refit resolved --threshold itself, on its held-back images
        predictor = Predictor.from_checkpoint(ckpt, rule, name=where, grid=grid)
        predictor.discover = discover
        n = write_predictions(predictor, images, path)
        sub_rule = "by neighbours (--discover)" if discover else f"{predictor.thr_sub:.4g}"
        log(f"wrote {path}: {n} images (thresholds {predictor.score}: superclass {predictor.thr_super:.4g}, "
            f"subclass {sub_rule})")
        done.append((path, n))
    return done
