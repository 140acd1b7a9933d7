"""The `hier-tl` command line: parse arguments, call one function, print. Heavy imports happen inside each
command, so `--help` is instant. Every user-caused or environment failure is a `HierTLError`: one line
(what, which file or key, what to do) and a non-zero exit; a traceback only with `--debug`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from .core.errors import HierTLError


def cmd_data_check(args) -> int:
    from .data.dataset import summary

    t0 = time.perf_counter()
    print("\n".join(summary(args.dir, args.image_size)))
    print(f"OK ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_data_synth(args) -> int:
    from .data.synthetic import SynthSpec, spec_fields, synthesize

    spec = SynthSpec(**{f.name: getattr(args, f.name) for f in spec_fields()})
    spec.validate()
    out = synthesize(args.out, spec)
    n = spec.n_super * spec.subs_per_super
    print(f"wrote {out}: {n * spec.per_class} training images over {spec.n_super} superclasses and {n} "
          f"subclasses; test_images/ with seen, novel-subclass and novel-superclass images; test_labels.csv")
    return 0


def cmd_train(args) -> int:
    from .data.dataset import load_dataset
    from .results.runfolder import train_to_folder
    from .train.train_config import load_train_config

    train_to_folder(load_train_config(args.config, args.set), load_dataset(args.data), args.out)
    return 0


def cmd_score(args) -> int:
    from pathlib import Path

    from .analysis.leaderboard import score_predictions
    from .core.errors import DataError
    from .data.dataset import SUB_CSV, SUPER_CSV
    from .data.taxonomy import read_level

    problems: list[str] = []  # scoring needs the novel indices, nothing else of the dataset
    sup, sub = (read_level(Path(args.data) / name, problems) for name in (SUPER_CSV, SUB_CSV))
    if problems:
        raise DataError(problems)
    s = score_predictions(args.predictions, args.labels, sup.novel, sub.novel)
    print(f"{s['n']} images")
    for lvl, name in (("super", "superclass"), ("sub", "subclass")):
        print(f"{name + ' accuracy:':21s} overall {_pct(s[lvl + '_acc'])}  seen {_pct(s[lvl + '_seen_acc'])}  "
              f"novel {_pct(s[lvl + '_novel_acc'])}")
    return 0


def _pct(x: float) -> str:
    return "   n/a" if x != x else f"{100 * x:6.2f}%"


def cmd_sweep(args) -> int:
    from .analysis.report import comparison_table, deciding, format_table
    from .results.storage import Storage
    from .sweep.runner import run_sweep
    from .sweep.sweep_config import load_sweep

    if args.resume and not args.name:
        raise HierTLError("--resume needs --name NAME: the name printed when the sweep started (or was interrupted)")
    storage = args.storage or os.environ.get("HIER_TL_STORAGE")  # set on the nodes by cluster/*.yaml
    sweep = load_sweep(args.sweep, smoke=args.smoke, overrides=args.set, name=args.name, storage=storage,
                       data=args.data)
    if not args.name and Storage(sweep.storage, sweep.name).exists("sweep.yaml"):
        sweep.name = f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"a sweep named after this file already exists in {sweep.storage}: this one is {sweep.name!r}")
    argv = ["hier-tl", "sweep", args.sweep, "--name", sweep.name] + (["--smoke"] if args.smoke else []) + \
        [f"--{k}={v}" for k, v in (("data", args.data), ("storage", storage), ("address", args.address)) if v] + \
        [f"--set={x}" for x in args.set]
    command = " ".join(shlex.quote(a) for a in ["hier-tl", *args.argv])
    res = run_sweep(sweep, args.address, args.resume, " ".join(shlex.quote(a) for a in argv), command, args.sweep)
    print(format_table(comparison_table(res.trials, res.metric, res.mode, deciding(res))))
    print(f"results: {res.storage.uri}\n  (pass exactly this to hier-tl report / best / predict / export)")
    return 0


def cmd_report(args) -> int:
    from .analysis.report import format_table, write_report

    from .analysis.unseen import parse_unseen

    unseen, ensemble = parse_unseen(args.unseen or []), None
    if args.ensemble:
        from .predict.ensemble import validate_ensemble

        ensemble = validate_ensemble(args.results, args.ensemble, args.data, args.protocol)
    table, state, out = write_report(args.results, args.out, " ".join(shlex.quote(a) for a in ["hier-tl", *args.argv]),
                                     unseen, ensemble)
    print(f"sweep state: {state}")
    print(format_table(table))
    print(f"wrote {out / 'report.md'} and report.html")
    return 0


def cmd_best(args) -> int:
    import json

    import yaml

    from .results.protocols import decision, within
    from .results.reading import best_document, load_results, select, trial_checkpoint

    res = load_results(args.results, tables=())
    label = decision(res.trials, res.meta, args.protocol)
    best = select(within(res.trials, label), args.metric, args.mode or res.mode_of(args.metric), args.where)
    state, ckpt = trial_checkpoint(res.storage, best, args.epoch)
    doc = {**best_document(best, ckpt), "protocol": label, "checkpoint_epoch": int(state["epoch"])}
    print(json.dumps(doc, indent=2) if args.format == "json" else yaml.safe_dump(doc, sort_keys=False), end="")
    return 0


def cmd_predict(args) -> int:
    from .predict.predict import run

    run(args.source, args.images, args.out, args.trial, args.threshold, args.refit, args.data, args.all_variants,
        args.epoch, protocol=args.protocol, ensemble=args.ensemble, ensemble_score=args.ensemble_score,
        discover=args.discover, refit_epochs=args.refit_epochs)
    return 0


def cmd_export(args) -> int:
    from .analysis.export import export_mlflow

    export_mlflow(args.results, args.tracking_uri, args.experiment, args.artifact_location)
    return 0


def cmd_cleanup(args) -> int:
    from .sweep.raycleanup import cleanup

    n = cleanup()
    print(f"{n} leftover Ray process(es) stopped" if n else "no leftover Ray processes")
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _threshold(text: str) -> str:
    """`--threshold`: the sweep file's threshold grammar (`core.config.Threshold`), checked before any work."""
    from .core.config import Threshold
    from .core.errors import ConfigError

    try:
        Threshold.per_level(text, "--threshold")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--threshold: ").removeprefix("--threshold ")) from None
    return text


def _add_data(sub) -> None:
    from .data.synthetic import spec_fields

    data = sub.add_parser("data", help="check a dataset folder, or write a synthetic one")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    c = dsub.add_parser("check", help="validate a dataset folder and print a summary (exit 2 on problems)")
    c.add_argument("dir", help="folder with train_images/, train_data.csv and the two mapping CSVs")
    c.add_argument("--image-size", type=_positive, default=64, help="side images are resized to (default 64)")
    c.set_defaults(fn=cmd_data_check)
    s = dsub.add_parser("synth", help="write a procedural dataset in the same layout (deterministic per seed)")
    s.add_argument("out", help="output folder")
    for f in spec_fields():
        s.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=int, default=f.default,
                       help=f"(default {f.default})")
    s.set_defaults(fn=cmd_data_synth)


def _add_train(sub) -> None:
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


def _add_sweep(sub) -> None:
    sw = sub.add_parser("sweep", help="run a sweep file on Ray Tune (local, or a cluster with --address)",
                        description="Run a sweep file on Ray Tune. Without --address an embedded local Ray is "
                        "started; results (Parquet) go to <storage>/<name>/. Ctrl-C stops gracefully and prints "
                        "the command that resumes.")
    sw.add_argument("sweep", help="sweep YAML, e.g. sweeps/smoke.yaml")
    sw.add_argument("--data", help="dataset folder (overrides the file's `data`)")
    sw.add_argument("--name", help="sweep name, one folder name (default: the file's `name`, made unique if taken)")
    sw.add_argument("--address", help="join an existing Ray cluster (e.g. auto, or 127.0.0.1:6379)")
    sw.add_argument("--storage", help="results root: a folder or s3://bucket/prefix?endpoint_override=..., gs://... "
                    "(default: $HIER_TL_STORAGE, else the file's `storage`)")
    sw.add_argument("--smoke", action="store_true", help="apply the file's `smoke:` overrides (about a minute on CPU)")
    sw.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name (same file and options)")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a sweep key, dotted for nesting: base.epochs=3, resources.gpu=0 (repeatable)")
    sw.set_defaults(fn=cmd_sweep)


EPOCH_HELP = ("which checkpoint of the trial: last (default, the final epoch the table ranks by) or best "
              "(the epoch with the best sweep metric; kept beside the last)")


PROTOCOL_HELP = ("the validation protocol to rank within (its label or number, as listed when a sweep has several): "
                 "objectives of different protocols are not comparable. Default: the sweep file's decide_on, or "
                 "the only protocol the sweep ran")


def _add_results(sub) -> None:
    where = "sweep results folder or URI, as the sweep printed it (<storage>/<name>, s3://...?...)"
    r = sub.add_parser("report", help="comparison table, report.md / report.html and plots for a sweep",
                       description="Turn a sweep's Parquet files into a comparison table (one row per backbone x "
                       "depth), learning curves, the seen/novel trade-off and its Pareto front, Optuna's HPO panels "
                       "and ASHA's rungs. Works on a running or interrupted sweep too, local or in object storage.")
    r.add_argument("results", help=where)
    r.add_argument("--out", help="folder for report.md, report.html and the PNGs (default: the results folder if "
                   "local, else ./<name>-report)")
    r.add_argument("--unseen", nargs="+", metavar="NAME=PERCENT",
                   help="accuracies measured on images of classes nobody tuned on (NAME: seen_super, novel_super, "
                   "seen_sub, novel_sub, new_breeds): the report sets each protocol's validation estimate beside "
                   "them and names the closest protocol")
    r.add_argument("--ensemble", type=_positive, default=0, metavar="K", help="also score the K best trials of the "
                   "deciding protocol together on their validation images, beside each alone (what predict "
                   "--ensemble K would use; runs the models, so it takes the time of K predictions)")
    r.add_argument("--protocol", metavar="LABEL|N", help="with --ensemble: " + PROTOCOL_HELP)
    r.add_argument("--data", help="with --ensemble: dataset folder (default: the sweep's data)")
    r.set_defaults(fn=cmd_report)
    b = sub.add_parser("best", help="print the best trial's config, metrics and checkpoint")
    b.add_argument("results", help=where)
    b.add_argument("--metric", default="objective", help="metric to rank by (its final-epoch value; default objective)")
    b.add_argument("--mode", choices=("max", "min"), help="default: the sweep's mode for its metric, else the "
                   "metric's direction (losses and fpr95 are minimised)")
    b.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only trials whose column KEY equals VALUE, e.g. backbone=resnet18 (repeatable)")
    b.add_argument("--protocol", metavar="LABEL|N", help=PROTOCOL_HELP)
    b.add_argument("--format", choices=("yaml", "json"), default="yaml")
    b.add_argument("--epoch", choices=("last", "best"), default="last", help=EPOCH_HELP)
    b.set_defaults(fn=cmd_best)
    pr = sub.add_parser("predict", help="write the predictions CSV (image,superclass_index,subclass_index)",
                        description="Predict every image of a folder with the best trial of a sweep (or a run "
                        "folder from `hier-tl train`). Novel indices come from the checkpoint's mapping.")
    pr.add_argument("source", help=where + ", or a run folder with checkpoint.pt")
    pr.add_argument("--images", required=True, help="folder of images to label (e.g. DATA/test_images)")
    pr.add_argument("--out", required=True, help="CSV to write")
    pr.add_argument("--trial", help="use this trial id instead of the best")
    pr.add_argument("--threshold", type=_threshold, metavar="RULE",
                    help="override the novelty threshold, as in a sweep file: a number, SUPER/SUB (one rule per "
                    "level), tpr:P or best (these two need validation scores: the trial's own rule, a rule of "
                    "the sweep file's novelty.thresholds grid, per level, or a run folder's val_outputs.pt)")
    pr.add_argument("--refit", action="store_true",
                    help="first retrain the chosen config on train + validation for the epochs it ran, holding "
                    "10%% back to calibrate its tpr: rule (or --threshold's) and printing its seen accuracies there")
    pr.add_argument("--refit-epochs", type=_positive, metavar="N", help="with --refit: train N epochs instead of "
                    "the trial's (a refit sees every class and more images than the trial did)")
    pr.add_argument("--data", help="with --refit: dataset folder (default: the sweep's data)")
    pr.add_argument("--epoch", choices=("last", "best"), default="last", help=EPOCH_HELP)
    pr.add_argument("--protocol", metavar="LABEL|N", help=PROTOCOL_HELP)
    pr.add_argument("--all-variants", action="store_true",
                    help="one CSV per backbone x depth (its best trial), named OUT_<backbone>_<depth>.csv")
    pr.add_argument("--ensemble", type=_positive, default=0, metavar="K",
                    help="average the K best trials of the best trial's protocol (with --refit: refit each); "
                    "thresholds resolved again on the ensemble")
    pr.add_argument("--ensemble-score", metavar="SCORE", help="with --ensemble: the novelty score (default: the "
                    "trials' own; 'disagreement' is the members' mutual information)")
    pr.add_argument("--discover", nargs="?", const="default", metavar="K",
                    type=lambda text: text if text in ("auto", "default") else _positive(text),
                    help="transductive: an image is a novel subclass when too few of its nearest neighbours "
                    "among the training bank and the folder are training images (in place of the subclass "
                    "threshold; each prediction then depends on the other images); K: also K extra k-means "
                    "clusters per superclass, their images novel ('auto': K by silhouette)")
    pr.set_defaults(fn=cmd_predict)
    ex = sub.add_parser("export", help="export a sweep to a tracker (mlflow)",
                        description="Export a sweep to MLflow: one parent run, a nested run per trial (config as "
                        "params, every epoch's metrics), the best trial's checkpoint as an artifact. Exporting again "
                        "adds only what is new; concurrent exports of one sweep leave one run per trial.")
    ex.add_argument("tracker", choices=("mlflow",))
    ex.add_argument("results", help=where)
    ex.add_argument("--tracking-uri", required=True, help="MLflow tracking server (http://127.0.0.1:5000), database "
                    "(sqlite:///path/mlflow.db) or file store (file:///path/mlruns)")
    ex.add_argument("--experiment", help="MLflow experiment (default hier-tl/<sweep name>)")
    ex.add_argument("--artifact-location", metavar="URI", help="where a new experiment keeps its artifacts (the best "
                    "trial's checkpoint). Default: a tracking server's own artifact store; for a database or file "
                    "store, beside the results: <results folder>/mlflow-artifacts (for s3:// or gs:// results, that "
                    "folder in the bucket); never the working directory")
    ex.set_defaults(fn=cmd_export)
    cl = sub.add_parser("cleanup", help="stop Ray processes left behind by a killed hier-tl driver")
    cl.set_defaults(fn=cmd_cleanup)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hier-tl", description="Hyperparameter sweeps (Ray Tune) for hierarchical transfer learning with "
        "open-set novelty detection. Run `hier-tl COMMAND --help` for each command.")
    p.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_data, _add_train, _add_sweep, _add_results):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded with results: the exact command
    if os.environ.get("HIER_TL_CACHE"):  # absolute: trials run in their own working directories
        os.environ["HIER_TL_CACHE"] = os.path.abspath(os.environ["HIER_TL_CACHE"])
    if args.command == "sweep":  # Ray processes a killed driver left behind
        from .sweep.raycleanup import cleanup

        cleanup()
    try:
        return args.fn(args) or 0
    except HierTLError as e:
        if args.debug:
            raise
        print("\n".join(e.lines()), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the environment (permissions, a full disk, a vanished file), not a bug
        if args.debug:
            raise
        from .core.fileio import describe

        print(f"error: {e.filename + ': ' if e.filename else ''}{describe(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
