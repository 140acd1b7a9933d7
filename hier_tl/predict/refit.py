"""`predict --refit`: retrain a sweep trial's configuration on every class before predicting, and
recalibrate its thresholds on held-back images of the refit model."""

from __future__ import annotations

import math
import time

import pandas as pd

from ..core.config import Threshold, from_dict
from ..core.errors import SelectionError
from ..data.synthetic import SynthSpec, load_source
from ..data.taxonomy import NOVEL
from ..results.reading import Results, trial_checkpoint
from ..train import checkpoint
from ..train.metrics import LEVELS, SUPER_MARGIN, acc_key, evaluate, threshold_at_margin
from ..train.train_config import TrainConfig
from ..train.trainer import fit

CALIBRATION = 0.1  # fraction of the images a refit holds back to recalibrate a `tpr:` threshold


def refit(res: Results, trial: pd.Series, data_dir: str | None, log=print, threshold: str | None = None,
          epochs: int | None = None) -> dict:
    """Retrain the trial's config on all classes (no hold-out) for the epochs it ran (or `epochs`: a refit
    trains on more images than the trial did, and may want longer), printing a line per epoch, and save it
    as refit/<trial>/checkpoint.pt in the sweep. Thresholds: a similarity threshold of one model does not
    transfer to another, so a `tpr:P` rule is resolved again on held-back calibration images (10%,
    stratified) of the refit model; a number or `best` keeps the sweep trial's value (per
    level, with `SUPER/SUB` rules). The checkpoint records which (`calibration`). `threshold` (predict's
    `--threshold`) replaces the trial's rule: its `tpr:` levels are calibrated, its numbers kept; `best` needs
    novel images, which the held-back images lack, so it is taken only where it is the trial's own rule.

    The superclass level: the held-back images are all of trained subclasses, so a `tpr:` rule resolved on
    them alone keeps no room for new breeds of known animals (the trial's validation held some out). Where the
    trial recorded its `super_margin`, the refit's superclass threshold sits that many known-breed spreads
    below their median instead (`_transfer`); both thresholds are printed side by side."""
    ckpt, _ = trial_checkpoint(res.storage, trial)
    cfg = from_dict(TrainConfig, ckpt["config"])
    last = ckpt["history"][-1] if ckpt.get("history") else {}
    thresholds = (last.get("threshold_super", math.nan), last.get("threshold_sub", math.nan))
    if not all(math.isfinite(t) for t in thresholds):
        raise SelectionError(f"trial {trial['trial_id']}: its checkpoint records no resolved thresholds to refit with")
    rule = str(threshold if threshold is not None else cfg.threshold)
    rules, keep = Threshold.per_level(rule, "--threshold"), _fixed(cfg, rule, thresholds)
    again = [lvl for lvl, r in rules.items() if r.kind == "tpr"]  # levels recalibrated; the others keep theirs
    recalibrate = bool(again)
    kept = "/".join(str(r) if r.kind == "tpr" else repr(float(t)) for r, t in zip(rules.values(), keep))
    refit_cfg = cfg.replace(epochs=epochs or int(trial["epochs_run"]), holdout_subclasses=0, holdout_superclasses=0,
                            folds=1, val_fraction=CALIBRATION if recalibrate else 0.0,
                            threshold=kept if recalibrate else keep[0])
    source = data_dir or res.meta.get("data", "synthetic")
    synth = from_dict(SynthSpec, res.meta.get("synthetic") or {})
    log(f"refit: {refit_cfg.backbone}/{refit_cfg.depth} for {refit_cfg.epochs} epochs on every class ({source})"
        + (f", {CALIBRATION:.0%} held back to recalibrate {rule}" if recalibrate else ""))
    data, saved, t0 = load_source(source, synth), {}, time.time()

    def report(r) -> None:
        saved["state"], saved["outputs"] = r.state(), r.outputs
        log(f"refit epoch {r.metrics['epoch']}/{refit_cfg.epochs}: train loss {r.metrics['train_loss']:.3f}, "
            f"{r.metrics['images_per_s']:.0f} img/s, {time.time() - t0:.0f} s")

    fit(refit_cfg, data, report)
    state = saved["state"]
    final = state["history"][-1]
    if recalibrate:
        state["calibration"] = {"method": "held-back calibration images", "fraction": CALIBRATION, "rule": rule,
                                "levels": again, "sweep_thresholds": list(thresholds)}
        if "super" in again:
            _transfer(state, saved["outputs"], cfg.novelty_score, last.get(SUPER_MARGIN, math.nan), log)
    else:
        final.update(threshold_super=keep[0], threshold_sub=keep[1])
        state["calibration"] = {"method": "the sweep trial's thresholds" if threshold is None else "--threshold",
                                "rule": rule}
    log(f"refit: thresholds superclass {final['threshold_super']:.4g}, subclass {final['threshold_sub']:.4g} "
        f"({state['calibration']['method']}; the sweep trial had {thresholds[0]:.4g}, {thresholds[1]:.4g})")
    if recalibrate:
        _held_back(state, saved["outputs"], cfg.novelty_score, log)
    rel = f"refit/{trial['trial_id']}/checkpoint.pt"
    res.storage.write_bytes(rel, checkpoint.to_bytes(state))
    log(f"refit: saved {res.storage.file_uri(rel)}")
    return state


def _fixed(cfg: TrainConfig, rule: str, recorded: tuple[float, float]) -> tuple[float, float]:
    """Per level, the value a refit keeps where `rule` is not recalibrated: a number is itself, `best` the
    trial's resolved value where it is the trial's own rule (else refused); `tpr:` levels get NaN (resolved
    on the held-back images)."""
    own = Threshold.per_level(cfg.threshold)
    out = []
    for (lvl, r), t in zip(Threshold.per_level(rule, "--threshold").items(), recorded):
        if r.kind == "best" and str(own[lvl]) != "best":
            raise SelectionError(f"--refit --threshold {rule}: the {lvl}class rule best needs novel images to "
                                 "resolve, and a refit's held-back images are all of trained classes: use tpr:P or "
                                 "a number")
        out.append(r.value if r.kind == "value" else t if r.kind == "best" else math.nan)
    return out[0], out[1]


def _held_back(state: dict, out, score: str, log) -> None:
    """Score the refit on its held-back calibration images (every class trained) with its final thresholds: the
    seen accuracies a user can expect on new images of known classes, printed and kept in the checkpoint."""
    final = state["history"][-1]
    rule = f"{final['threshold_super']!r}/{final['threshold_sub']!r}"
    m = evaluate(out, out.space, score, rule)
    closed = {lvl: float((out.logits(lvl).argmax(1) == out.target(lvl)).float().mean()) for lvl in LEVELS}
    held = {"images": int(len(out.super_target)), "seen_super_acc": m[acc_key("super")],
            "seen_sub_acc": m[acc_key("sub")], "closed_super_acc": closed["super"], "closed_sub_acc": closed["sub"]}
    state["calibration"]["held_back"] = held
    log(f"refit: on its {held['images']} held-back images (every class trained) seen superclass "
        f"{held['seen_super_acc']:.1%}, seen subclass {held['seen_sub_acc']:.1%} with these thresholds "
        f"(closed-set: {held['closed_super_acc']:.1%}, {held['closed_sub_acc']:.1%})")


def _transfer(state: dict, out, score: str, margin: float, log) -> None:
    """Move the refit's superclass threshold to the trial's `super_margin` on its held-back images (all of
    trained subclasses), print both calibrations, and record them in `state["calibration"]`."""
    final = state["history"][-1]
    known = out.score(score, "super")[out.super_target != NOVEL]
    recalibrated = float(final["threshold_super"])
    if not math.isfinite(margin) or len(known) < 2:
        log(f"refit: superclass threshold {recalibrated:.4g} from held-back images of trained subclasses only (the "
            "trial recorded no super_margin: its validation held out no subclass, or it predates the metric)")
        return
    moved = threshold_at_margin(known, margin)
    log(f"refit: superclass threshold {recalibrated:.4g} on held-back images of trained subclasses alone; "
        f"{moved:.4g} at the trial's margin ({margin:.2f} known-breed spreads below their median, from validation "
        f"with new breeds held out): using {moved:.4g}")
    final["threshold_super"] = moved
    state["calibration"].update(super_recalibrated=recalibrated, super_margin=margin, super_threshold=moved)
