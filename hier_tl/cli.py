"""The `hier-tl` command line. Heavy imports happen inside each command, so `--help` is instant."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

EXIT_USAGE = 2


class UserError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def _print_problems(e) -> None:
    print(f"error: {e}", file=sys.stderr)


def cmd_data_check(args) -> int:
    from .data import list_images, load_dataset, load_images, TEST_DIR

    t0 = time.perf_counter()
    ds = load_dataset(args.dir, args.image_size)
    tax = ds.taxonomy
    print(f"{args.dir}: {len(ds)} training images, {len(set(ds.superclass.tolist()))} superclasses, "
          f"{len(set(ds.subclass.tolist()))} subclasses (novel indices: superclass {tax.superclass.novel}, "
          f"subclass {tax.subclass.novel})")
    for s in sorted(set(ds.superclass.tolist())):
        mask = ds.superclass == s
        print(f"  superclass {s} {tax.superclass.names[s]!r}: {int(mask.sum())} images, "
              f"{len(set(ds.subclass[mask].tolist()))} subclasses")
    counts = {int(k): int(v) for k, v in zip(*ds.subclass.unique(return_counts=True))}
    lo, hi = min(counts, key=counts.get), max(counts, key=counts.get)
    print(f"  subclass sizes: smallest {counts[lo]} ({tax.subclass.names[lo]!r}), largest {counts[hi]} "
          f"({tax.subclass.names[hi]!r}), largest/smallest ratio {counts[hi] / counts[lo]:.2f}")
    print(f"  image sizes: {_fmt(ds.sizes)}; modes: {_fmt(ds.modes)}")
    test_dir = Path(args.dir) / TEST_DIR
    if test_dir.is_dir():
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            imgs = load_images(test_dir, args.image_size)
        n_files = len(list_images(test_dir))
        print(f"  test images: {n_files} found in {TEST_DIR}/, {len(imgs.names)} decodable"
              + (f", {len(imgs.failed)} NOT decodable (predict skips them): "
                 f"{', '.join(list(imgs.failed)[:5])}" if imgs.failed else ""))
    else:
        print(f"  test images: none ({TEST_DIR}/ not found)")
    for note in ds.warnings:
        print(f"  warning: {note}")
    print(f"OK ({time.perf_counter() - t0:.1f} s)")
    return 0


def _fmt(counter: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))


def cmd_data_synth(args) -> int:
    from .synthetic import SynthSpec, synthesize

    spec = SynthSpec(n_super=args.n_super, subs_per_super=args.subs_per_super, per_class=args.per_class,
                     size=args.size, seed=args.seed, test_per_class=args.test_per_class)
    try:
        spec.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    out = synthesize(args.out, spec)
    n = spec.n_super * spec.subs_per_super
    print(f"wrote {out}: {n * spec.per_class} training images over {spec.n_super} superclasses and {n} "
          f"subclasses; test_images/ with seen, novel-subclass and novel-superclass images; test_labels.csv")
    return 0


def cmd_train(args) -> int:
    from .config import dump_yaml, load_train_config
    from .data import load_dataset
    from .results import config_columns, write_parquet
    from .train import fit

    cfg = load_train_config(args.config, args.set)
    ds = load_dataset(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / "config.yaml")
    rows = []

    def report(m, save, outputs):
        import torch

        rows.append({**config_columns(cfg), **m})
        write_parquet(rows, out / "metrics.parquet")
        torch.save(outputs.to_dict(), out / "val_outputs.pt")
        save(out / "checkpoint.pt")
        print(f"epoch {m['epoch']}/{cfg.epochs}  loss {m['train_loss']:.3f}/{m['val_loss']:.3f}  "
              f"super {m['seen_super_acc']:.3f}  sub {m['seen_sub_acc']:.3f}  "
              f"novel {m['novel_super_acc']:.3f}/{m['novel_sub_acc']:.3f}  objective {m['objective']:.3f}  "
              f"{m['images_per_s']:.0f} img/s  {m['epoch_time']:.1f} s", flush=True)

    fit(cfg, ds, report)
    print(f"wrote {out}/config.yaml, metrics.parquet, val_outputs.pt, checkpoint.pt")
    return 0


def cmd_score(args) -> int:
    from .metrics import ScoreError, score_predictions
    from .data import read_layout

    tax, _, problems = read_layout(args.data)
    if tax is None:
        raise UserError("cannot read the mapping files:\n" + "\n".join(problems))
    try:
        s = score_predictions(args.predictions, args.labels, tax.superclass.novel, tax.subclass.novel)
    except ScoreError as e:
        raise UserError(str(e)) from None
    print(f"{s['n']} images")
    for lvl, name in (("super", "superclass"), ("sub", "subclass")):
        print(f"{name + ' accuracy:':21s} overall {_pct(s[lvl + '_acc'])}  seen {_pct(s[lvl + '_seen_acc'])}  "
              f"novel {_pct(s[lvl + '_novel_acc'])}")
    return 0


def _pct(x: float) -> str:
    return "   n/a" if x != x else f"{100 * x:6.2f}%"


def cmd_sweep(args) -> int:
    import shlex

    from .storage import Storage
    from .sweep import load_sweep
    from .tune import SweepError, run_sweep

    if args.resume and not args.name:
        raise UserError("--resume needs --name NAME: the name printed when the sweep started (or was interrupted)")
    storage = args.storage or os.environ.get("HIER_TL_STORAGE")  # set on the nodes by cluster/*.yaml
    sweep = load_sweep(args.sweep, smoke=args.smoke, overrides=args.set, name=args.name, storage=storage,
                       data=args.data)
    if not args.name and Storage(sweep.storage, sweep.name).exists("trials.parquet"):
        sweep.name = f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"a sweep named after this file already exists in {sweep.storage}: this one is {sweep.name!r}")
    argv = ["hier-tl", "sweep", args.sweep, "--name", sweep.name] + (["--smoke"] if args.smoke else []) + \
        [f"--{k}={v}" for k, v in (("data", args.data), ("storage", storage), ("address", args.address)) if v] + \
        [f"--set={x}" for x in args.set]
    try:
        trials = run_sweep(sweep, args.address, args.resume, " ".join(shlex.quote(a) for a in argv))
    except SweepError as e:
        raise UserError(str(e)) from None
    from .report import comparison_table, format_table

    print(format_table(comparison_table(trials, sweep.scheduler.metric, sweep.scheduler.mode)))
    print(f"results: {Storage(sweep.storage, sweep.name).exp}  (hier-tl report / best / predict take this folder)")
    return 0


def cmd_report(args) -> int:
    from .report import format_table, write_report

    d = Path(args.results)
    if not (d / "trials.parquet").is_file():
        raise UserError(f"{d}: no trials.parquet here (expected a sweep results folder, <storage>/<name>/)")
    table, state = write_report(d, args.out)
    print(f"sweep state: {state}")
    print(format_table(table))
    print(f"wrote {Path(args.out or d) / 'report.md'} and report.html")
    return 0


def cmd_best(args) -> int:
    import json

    import yaml

    from .predict import SelectionError, load_sweep_results, select_best, trial_checkpoint

    try:
        trials, meta = load_sweep_results(args.results)
        sched = meta.get("scheduler", {})
        mode = sched.get("mode") if args.metric == sched.get("metric", "objective") else None
        best = select_best(trials, args.metric, mode, args.where)
        ckpt = trial_checkpoint(args.results, best)
    except SelectionError as e:
        raise UserError(str(e)) from None
    from .config import TrainConfig

    keys = set(TrainConfig.__dataclass_fields__)
    doc = {"trial_id": best["trial_id"], "status": best["status"], "checkpoint": str(ckpt),
           "config": {k: _plain(best[k]) for k in best.index if k in keys},
           "metrics": {k.removeprefix("final_"): _plain(best[k]) for k in best.index if k.startswith("final_")},
           "epochs_run": int(best["epochs_run"])}
    print(json.dumps(doc, indent=2) if args.format == "json" else yaml.safe_dump(doc, sort_keys=False), end="")
    return 0


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and v != v else v


def cmd_predict(args) -> int:
    from .predict import (Predictor, SelectionError, load_sweep_results, refit, select_best, trial_checkpoint,
                          write_predictions)
    from .report import comparison_table

    src = Path(args.source)
    jobs = []  # (checkpoint, out path)
    try:
        if (src / "checkpoint.pt").is_file() and not (src / "trials.parquet").is_file():
            if args.trial or args.all_variants or args.refit:
                raise UserError("--trial, --all-variants and --refit need a sweep results folder, not a run folder")
            jobs.append((src / "checkpoint.pt", Path(args.out)))
        else:
            trials, meta = load_sweep_results(src)
            if args.all_variants:
                sched = meta.get("scheduler", {})
                table = comparison_table(trials[trials.epochs_run > 0], sched.get("metric", "objective"),
                                         sched.get("mode", "max"))
                chosen = [trials[trials.trial_id == t].iloc[0] for t in table["best trial"]]
            elif args.trial:
                match = trials[trials.trial_id == args.trial]
                if match.empty:
                    raise UserError(f"no trial {args.trial!r} in {src}; trials: {', '.join(trials.trial_id)}")
                chosen = [match.iloc[0]]
            else:
                chosen = [select_best(trials, meta.get("scheduler", {}).get("metric", "objective"),
                                      meta.get("scheduler", {}).get("mode"))]
            out = Path(args.out)
            for t in chosen:
                ckpt = refit(src, t, meta, args.data) if args.refit else trial_checkpoint(src, t)
                path = out.with_name(f"{out.stem}_{t['backbone']}_{t['depth']}{out.suffix}") if args.all_variants else out
                print(f"trial {t['trial_id']} ({t['backbone']}/{t['depth']}) -> {path}")
                jobs.append((ckpt, path))
    except SelectionError as e:
        raise UserError(str(e)) from None
    for ckpt, path in jobs:
        predictor = Predictor.from_checkpoint(ckpt, args.threshold)
        n = write_predictions(predictor, args.images, path)
        print(f"wrote {path}: {n} images (thresholds {predictor.score}: superclass {predictor.thr_super:.4g}, "
              f"subclass {predictor.thr_sub:.4g})")
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hier-tl", description="Hyperparameter sweeps (Ray Tune) for hierarchical transfer learning with "
        "open-set novelty detection. Run `hier-tl COMMAND --help` for each command.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="check a dataset folder, or write a synthetic one")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    c = dsub.add_parser("check", help="validate a dataset folder and print a summary (exit 2 on problems)")
    c.add_argument("dir", help="folder with train_images/, train_data.csv and the two mapping CSVs")
    c.add_argument("--image-size", type=_positive, default=64, help="side images are resized to (default 64)")
    c.set_defaults(fn=cmd_data_check)
    s = dsub.add_parser("synth", help="write a procedural dataset in the same layout (deterministic per seed)")
    s.add_argument("out", help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n-super", type=int, default=3, help="known superclasses (default 3)")
    s.add_argument("--subs-per-super", type=int, default=6, help="known subclasses per superclass (default 6)")
    s.add_argument("--per-class", type=int, default=40, help="training images per subclass (default 40)")
    s.add_argument("--test-per-class", type=int, default=8, help="test images per class (default 8)")
    s.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    s.set_defaults(fn=cmd_data_synth)

    t = sub.add_parser("train", help="train one configuration (the shared trainer, no Ray)")
    t.add_argument("config", nargs="?", help="YAML file of TrainConfig keys (omit for all defaults)")
    t.add_argument("--data", required=True, help="dataset folder")
    t.add_argument("--out", required=True, help="run folder: config.yaml, metrics.parquet, val_outputs.pt, checkpoint.pt")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    t.set_defaults(fn=cmd_train)

    sc = sub.add_parser("score", help="score a predictions CSV against a labels CSV, as the leaderboard does")
    sc.add_argument("predictions", help="CSV: image,superclass_index,subclass_index")
    sc.add_argument("labels", help="CSV with the same columns; novel indices where novel")
    sc.add_argument("--data", required=True, help="dataset folder (for the novel indices in the mapping files)")
    sc.set_defaults(fn=cmd_score)

    sw = sub.add_parser("sweep", help="run a sweep file on Ray Tune (local, or a cluster with --address)",
                        description="Run a sweep file on Ray Tune. Without --address an embedded local Ray is "
                        "started; results (Parquet) go to <storage>/<name>/. Ctrl-C stops gracefully and prints "
                        "the command that resumes.")
    sw.add_argument("sweep", help="sweep YAML, e.g. sweeps/smoke.yaml")
    sw.add_argument("--data", help="dataset folder (overrides the file's `data`)")
    sw.add_argument("--name", help="sweep name (default: the file's `name`, made unique if taken)")
    sw.add_argument("--address", help="join an existing Ray cluster (e.g. auto, or 127.0.0.1:6379)")
    sw.add_argument("--storage", help="results root: a folder or s3://bucket/prefix, gs://... "
                    "(default: $HIER_TL_STORAGE, else the file's `storage`)")
    sw.add_argument("--smoke", action="store_true", help="apply the file's `smoke:` overrides (about a minute on CPU)")
    sw.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a sweep key, dotted for nesting: base.epochs=3, resources.gpu=0 (repeatable)")
    sw.set_defaults(fn=cmd_sweep)

    r = sub.add_parser("report", help="comparison table, report.md / report.html and plots for a sweep",
                       description="Turn a sweep's Parquet files into a comparison table (one row per backbone x "
                       "depth), learning curves, the seen/novel trade-off across thresholds and ASHA's rungs. "
                       "Works on a running or interrupted sweep too.")
    r.add_argument("results", help="sweep results folder (<storage>/<name>/)")
    r.add_argument("--out", help="where to write report.md, report.html and the PNGs (default: the results folder)")
    r.set_defaults(fn=cmd_report)

    b = sub.add_parser("best", help="print the best trial's config, metrics and checkpoint path")
    b.add_argument("results", help="sweep results folder")
    b.add_argument("--metric", default="objective", help="metric to rank by (its final-epoch value; default objective)")
    b.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only trials whose column KEY equals VALUE, e.g. backbone=resnet18 (repeatable)")
    b.add_argument("--format", choices=("yaml", "json"), default="yaml")
    b.set_defaults(fn=cmd_best)

    pr = sub.add_parser("predict", help="write the predictions CSV (image,superclass_index,subclass_index)",
                        description="Predict every image of a folder with the best trial of a sweep (or a run "
                        "folder from `hier-tl train`). Novel indices come from the checkpoint's mapping.")
    pr.add_argument("source", help="sweep results folder, or a run folder with checkpoint.pt")
    pr.add_argument("--images", required=True, help="folder of images to label (e.g. DATA/test_images)")
    pr.add_argument("--out", required=True, help="CSV to write")
    pr.add_argument("--trial", help="use this trial id instead of the best")
    pr.add_argument("--threshold", type=float, help="override the novelty threshold (both levels)")
    pr.add_argument("--refit", action="store_true",
                    help="first retrain the chosen config on train + validation for the epochs it ran")
    pr.add_argument("--data", help="with --refit: dataset folder (default: the sweep's data)")
    pr.add_argument("--all-variants", action="store_true",
                    help="one CSV per backbone x depth (its best trial), named OUT_<backbone>_<depth>.csv")
    pr.set_defaults(fn=cmd_predict)
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .data import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except DataError as e:
        print(f"error: {len(e.problems)} problem(s) in the data:", file=sys.stderr)
        for line in e.problems[:50]:
            print(f"  {line}", file=sys.stderr)
        if len(e.problems) > 50:
            print(f"  ... and {len(e.problems) - 50} more", file=sys.stderr)
        return EXIT_USAGE
    except (UserError, ConfigError) as e:
        _print_problems(e)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - known user-fixable failures below, everything else re-raised
        from .models import WeightsError
        from .train import DivergedError

        if isinstance(e, (WeightsError, DivergedError, FileNotFoundError, ValueError)):
            _print_problems(e)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
