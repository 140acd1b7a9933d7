"""report / best / predict on a finished (and a partial) sweep."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hier_tl import load_results
from hier_tl.cli import main

pytestmark = pytest.mark.slow


def test_report_numbers_equal_the_parquet(sweep, tmp_path, capsys):
    results, _ = sweep
    assert main(["report", str(results), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sweep state: finished" in out
    for f in ("report.md", "report.html", "curves.png", "tradeoff.png", "rungs.png", "pareto_p1.png",
              "hpo_history_p1.png", "hpo_intermediate_p1.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" or f.startswith("report"), f
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()  # self-contained
    from hier_tl.analysis.report import comparison_table
    trials = pd.read_parquet(results / "trials.parquet")
    table = comparison_table(trials)
    assert len(table) == 2 and set(table.depth) == {"full", "partial"} and set(table.P) == {"P1"}
    for row in table.itertuples(index=False):
        t = trials[trials.trial_id == row[table.columns.get_loc("best trial")]].iloc[0]
        group = trials[(trials.backbone == t.backbone) & (trials.depth == t.depth)]
        assert t.final_objective == group.final_objective.max()
        assert row[table.columns.get_loc("seen super")] == t.final_seen_super_acc
        assert not pd.isna(t.final_novel_sub_acc)  # one subclass per superclass is held out as novel
        assert row[table.columns.get_loc("novel sub")] == t.final_novel_sub_acc
        assert row[table.columns.get_loc("trials")] == len(group)
        assert row[table.columns.get_loc("compute s")] == pytest.approx(group.compute_s.sum())
    md = (tmp_path / "report.md").read_text()
    best = table.iloc[0]
    assert f"{100 * best['seen sub']:.1f}%" in md and f"{best['lr']:.1e}" in md  # formatted as in the terminal
    assert str(best["seen sub"]) not in md  # no raw floats
    # the trade-off is drawn from real novel accuracies, and the table says where each row sits on the front
    th = load_results(results).thresholds
    assert th.novel_sub_acc.notna().all() and "front sub" in table_written(tmp_path)


def test_report_on_a_partial_sweep_says_so(sweep, tmp_path, capsys):
    results, _ = sweep
    part = tmp_path / "partial"
    shutil.copytree(results, part)
    df = pd.read_parquet(part / "trials.parquet")
    df.loc[0, "status"] = "interrupted"
    df.to_parquet(part / "trials.parquet")
    assert main(["report", str(part)]) == 0
    assert "interrupted" in capsys.readouterr().out
    df.loc[0, "status"] = "running"
    df.to_parquet(part / "trials.parquet")
    assert main(["report", str(part)]) == 0
    assert "still running" in capsys.readouterr().out


def test_best_agrees_with_pandas(sweep, capsys):
    results, _ = sweep
    trials = pd.read_parquet(results / "trials.parquet")
    assert main(["best", str(results), "--format", "yaml"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["trial_id"] == trials.loc[trials.final_objective.idxmax(), "trial_id"]
    assert Path(doc["checkpoint"]).is_file() and doc["config"]["backbone"] == "cnn_tiny"
    assert main(["best", str(results), "--where", "depth=partial", "--metric", "val_loss", "--format", "json"]) == 0
    import json
    doc = json.loads(capsys.readouterr().out)
    part = trials[trials.depth == "partial"]
    assert doc["trial_id"] == part.loc[part.final_val_loss.idxmin(), "trial_id"]


@pytest.mark.parametrize("args,needle", [
    (["--metric", "accuracy_of_dreams"], "no metric"),
    (["--where", "backbone=resnet18"], "no trial"),
    (["--where", "colour=red"], "no such column"),
])
def test_best_errors(sweep, capsys, args, needle):
    assert main(["best", str(sweep[0]), *args]) == 2
    assert needle in capsys.readouterr().err


def test_predict_csv_format_order_and_score(sweep, tmp_path, capsys):
    results, data = sweep
    out = tmp_path / "pred.csv"
    assert main(["predict", str(results), "--images", str(data / "test_images"), "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["image", "superclass_index", "subclass_index"]
    labels = pd.read_csv(data / "test_labels.csv")
    assert len(df) == len(labels)
    assert list(df.image) == sorted(df.image, key=lambda n: int(n.split(".")[0]))  # numeric order
    sup_map = pd.read_csv(data / "superclass_mapping.csv")
    sub_map = pd.read_csv(data / "subclass_mapping.csv")
    assert set(df.superclass_index) <= set(sup_map["index"]) and set(df.subclass_index) <= set(sub_map["index"])
    novel_sup = int(sup_map[sup_map["class"] == "novel"]["index"].iloc[0])
    novel_sub = int(sub_map[sub_map["class"] == "novel"]["index"].iloc[0])
    assert ((df.superclass_index != novel_sup) | (df.subclass_index == novel_sub)).all()  # hierarchy rule
    capsys.readouterr()
    assert main(["score", str(out), str(data / "test_labels.csv"), "--data", str(data)]) == 0
    scored = capsys.readouterr().out
    # the test images come from the same generator: seen superclass accuracy within noise of validation's
    trials = pd.read_parquet(results / "trials.parquet")
    best = trials.loc[trials.final_objective.idxmax()]
    seen_super = float(scored.split("superclass accuracy:")[1].split("seen")[1].split("%")[0]) / 100
    assert abs(seen_super - best.final_seen_super_acc) < 0.25, (seen_super, best.final_seen_super_acc)


def test_predict_skips_unreadable_images_with_a_warning(sweep, tmp_path, capsys):
    results, data = sweep
    imgs = tmp_path / "imgs"
    shutil.copytree(data / "test_images", imgs)
    (imgs / "3.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "p.csv"
    assert main(["predict", str(results), "--images", str(imgs), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "3.jpg" in err and "could not be read" in err
    df = pd.read_csv(out)
    assert "3.jpg" not in set(df.image) and len(df) == len(list(imgs.iterdir())) - 1


def test_predict_all_variants_and_trial_and_errors(sweep, tmp_path, capsys):
    results, data = sweep
    out = tmp_path / "p.csv"
    assert main(["predict", str(results), "--images", str(data / "test_images"), "--out", str(out),
                 "--all-variants"]) == 0
    assert {p.name for p in tmp_path.glob("p_*.csv")} == {"p_cnn_tiny_full.csv", "p_cnn_tiny_partial.csv"}
    assert main(["predict", str(results), "--images", str(data / "test_images"), "--out", str(out),
                 "--trial", "nope"]) == 2
    assert "no trial 'nope'" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--images", str(data / "test_images"), "--out", str(out)]) == 2
    assert "no trials.parquet here" in capsys.readouterr().err


def test_predict_on_a_folder_without_readable_images(sweep, tmp_path, capsys):
    results, _ = sweep
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "1.jpg").write_bytes(b"")
    out = tmp_path / "p.csv"
    assert main(["predict", str(results), "--images", str(tmp_path / "imgs"), "--out", str(out)]) == 0
    assert out.read_text() == "image,superclass_index,subclass_index\n"
    assert "no readable image" in capsys.readouterr().err




def test_predict_from_a_train_run_folder(synth_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(synth_dir), "--out", str(run), "--set", "backbone=cnn_tiny",
                 "--set", "epochs=1"]) == 0
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), "--images", str(synth_dir / "test_images"), "--out", str(out),
                 "--threshold", "0.5"]) == 0
    assert len(pd.read_csv(out)) == len(list((synth_dir / "test_images").iterdir()))


def table_written(folder) -> str:
    """The protocol blocks' tables of report.md (the header and glossary come first)."""
    return "\n".join(line for line in (folder / "report.md").read_text().splitlines() if line.startswith("|"))


def test_report_on_a_sweep_with_no_epoch_yet(sweep, tmp_path, capsys):
    results, _ = sweep
    part = tmp_path / "early"
    shutil.copytree(results, part)
    df = pd.read_parquet(part / "trials.parquet")
    df["epochs_run"], df["status"] = 0, "running"
    df = df[[c for c in df.columns if not c.startswith(("final_", "best_"))]]
    df.to_parquet(part / "trials.parquet")
    shutil.rmtree(part / "epochs")
    shutil.rmtree(part / "thresholds")
    assert main(["report", str(part)]) == 0
    out = capsys.readouterr().out
    assert "no trial has reported an epoch yet" in out
    md = (part / "report.md").read_text()
    assert "State: no trial has reported an epoch yet" in md and "not drawn: no trial has reported" in md
    assert main(["best", str(part)]) == 2
    assert "has any trial reported an epoch yet" in capsys.readouterr().err


def test_report_on_a_full_disk_leaves_no_empty_png(sweep, tmp_path, capsys, monkeypatch):
    import errno

    import matplotlib.figure
    results, _ = sweep

    def full(self, fname, *a, **k):
        with open(fname, "wb"):
            pass  # the 0-byte file a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    assert main(["report", str(results), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device" in err[0] and ".png" in err[0]
    assert list(tmp_path.iterdir()) == []  # no 0-byte PNG, no temporary file


def test_the_best_epochs_weights_are_kept_beside_the_last(sweep, tmp_path, capsys):
    results, data = sweep
    from hier_tl.results.reading import checkpoints, trial_checkpoint
    from hier_tl.results.storage import Storage
    st = Storage.open(str(results))
    trials = load_results(results, tables=()).trials
    for t in trials[trials.epochs_run > 0].itertuples():
        row = pd.Series(t._asdict())
        kept = checkpoints(st, row)
        assert 1 <= len(kept) <= 2  # the last, and the best when it is another epoch
        assert int(trial_checkpoint(st, row, "last")[0]["epoch"]) == t.epochs_run
        assert int(trial_checkpoint(st, row, "best")[0]["epoch"]) == t.best_epoch
    assert main(["best", str(results), "--epoch", "best"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    best = trials[trials.trial_id == doc["trial_id"]].iloc[0]
    assert doc["checkpoint_epoch"] == best.best_epoch
    out = tmp_path / "p.csv"
    assert main(["predict", str(results), "--images", str(data / "test_images"), "--out", str(out),
                 "--epoch", "best"]) == 0 and len(pd.read_csv(out)) > 0
