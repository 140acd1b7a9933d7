"""analysis.leaderboard: a predictions CSV scored against a labels CSV, as the leaderboard does."""
import pytest

from hier_tl.cli import main


def _csv(path, rows):
    path.write_text("image,superclass_index,subclass_index\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return path


def test_score_command_by_hand(synth_dir, tmp_path, capsys):
    # novel indices of the synthetic set: superclass 3, subclass 9
    labels = _csv(tmp_path / "l.csv", [("a.jpg", 0, 1), ("b.jpg", 1, 9), ("c.jpg", 3, 9), ("d.jpg", 2, 5)])
    preds = _csv(tmp_path / "p.csv", [("d.jpg", 2, 4), ("a.jpg", 0, 1), ("b.jpg", 1, 9), ("c.jpg", 1, 9)])
    assert main(["score", str(preds), str(labels), "--data", str(synth_dir)]) == 0
    out = capsys.readouterr().out
    # superclass: a,b,d right, c wrong -> 75%; seen (a,b,d) 100%; novel (c) 0%
    assert "overall  75.00%  seen 100.00%  novel   0.00%" in out
    # subclass: a right, b right (novel), c right (novel), d wrong -> 75%; seen (a,d) 50%; novel (b,c) 100%
    assert "overall  75.00%  seen  50.00%  novel 100.00%" in out


def test_score_a_literal_minus_one_is_not_novel(synth_dir, tmp_path, capsys):
    labels = _csv(tmp_path / "l.csv", [("a.jpg", 3, 9)])
    preds = _csv(tmp_path / "p.csv", [("a.jpg", -1, -1)])
    assert main(["score", str(preds), str(labels), "--data", str(synth_dir)]) == 0
    assert "novel   0.00%" in capsys.readouterr().out


@pytest.mark.parametrize("rows,needle", [
    ([("a.jpg", 0, 1)], "no prediction"),
    ([("a.jpg", 0, 1), ("b.jpg", 1, 9), ("z.jpg", 1, 1)], "not in the labels"),
    ([("a.jpg", 0, 1), ("a.jpg", 0, 1)], "more than once"),
    ([("a.jpg", "x", 1), ("b.jpg", 1, 9)], "not an integer"),
])
def test_score_errors(synth_dir, tmp_path, capsys, rows, needle):
    labels = _csv(tmp_path / "l.csv", [("a.jpg", 0, 1), ("b.jpg", 1, 9)])
    preds = _csv(tmp_path / "p.csv", rows)
    assert main(["score", str(preds), str(labels), "--data", str(synth_dir)]) == 2
    assert needle in capsys.readouterr().err


def test_score_wrong_columns(synth_dir, tmp_path, capsys):
    labels = _csv(tmp_path / "l.csv", [("a.jpg", 0, 1)])
    (tmp_path / "p.csv").write_text("img,super,sub\na.jpg,0,1\n")
    assert main(["score", str(tmp_path / "p.csv"), str(labels), "--data", str(synth_dir)]) == 2
    assert "missing column" in capsys.readouterr().err
