"""Reading a results folder: damage is one line naming the file and what to do, another program's files are
recognised as foreign, and unreadable parts of the append-only tables are skipped with a one-line warning.
Every case damages a copy of one real sweep (the shared `sweep` fixture) and runs the commands that read it."""

import glob
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hier_tl.cli import main
from hier_tl.results.reading import load_results

pytestmark = pytest.mark.slow  # the shared sweep takes a minute to make once


def _foreign_parquet(p: Path) -> None:
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), p)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _each(pattern: str, damage):
    return lambda d: [damage(Path(p)) for p in glob.glob(str(d / pattern))]


def _set(path: str, text: str):
    return lambda d: (d / path).write_text(text)


# (damage, the file the one error line names, text it holds); every command reading the folder fails so
ERRORS = {
    "trials_not_parquet": (_set("trials.parquet", "hello"), "trials.parquet", "not a Parquet file, or a damaged one"),
    "trials_empty": (_set("trials.parquet", ""), "trials.parquet", "not a Parquet file, or a damaged one"),
    "trials_truncated": (lambda d: _truncate(d / "trials.parquet"), "trials.parquet", "restore it from a copy"),
    "trials_other_columns": (lambda d: _foreign_parquet(d / "trials.parquet"), "trials.parquet",
                             "is not a hier-tl results folder"),
    "trials_without_status": (lambda d: pq.write_table(pq.read_table(d / "trials.parquet").drop(["status"]),
                                                       d / "trials.parquet"), "trials.parquet",
                              "is not a hier-tl results folder"),
    "sweep_not_yaml": (_set("sweep.yaml", "a: [1, 2\nb: {"), "sweep.yaml", "not valid YAML"),
    "sweep_a_list": (_set("sweep.yaml", "- 1\n- 2\n"), "sweep.yaml", "is not a hier-tl results folder"),
    "sweep_of_another_program": (_set("sweep.yaml", "apiVersion: v1\nkind: Pod\n"), "sweep.yaml",
                                 "is not a hier-tl results folder"),
    "sweep_empty": (_set("sweep.yaml", ""), "sweep.yaml", "is not a hier-tl results folder"),
    "sweep_not_text": (lambda d: (d / "sweep.yaml").write_bytes(b"\xff\xfe\x00"), "sweep.yaml", "not text"),
    "sweep_bad_mode": (lambda d: (d / "sweep.yaml").write_text((d / "sweep.yaml").read_text().replace(
        "mode: max", "mode: maximize")), "sweep.yaml", "restore it from a copy"),
}
COMMANDS = {
    "best": lambda d, data, tmp: ["best", str(d)],
    "report": lambda d, data, tmp: ["report", str(d), "--out", str(tmp / "report")],
    "predict": lambda d, data, tmp: ["predict", str(d), "--images", str(data / "test_images"), "--out",
                                     str(tmp / "p.csv")],
    "export": lambda d, data, tmp: ["export", "mlflow", str(d), "--tracking-uri", "http://127.0.0.1:9"],
}


def damaged(sweep, tmp_path, damage) -> Path:
    d = tmp_path / "r"
    shutil.copytree(sweep[0], d)
    damage(d)
    return d


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_damage_is_one_line_naming_the_file_for_every_reader(sweep, tmp_path, capsys, case):
    damage, name, needle = ERRORS[case]
    d = damaged(sweep, tmp_path, damage)
    for command, argv in COMMANDS.items():
        assert main(argv(d, sweep[1], tmp_path)) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (command, err)
        assert str(d / name) in err[0] or f"{d} is not a hier-tl results folder: its {name}" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no report, no predictions, nothing half-written


# (damage, the part it names): the commands go on without the part's rows, saying so in one line
PARTS = {
    "epochs_part_garbage": (_each("epochs/*.parquet", lambda p: p.write_bytes(b"garbage")), "epochs"),
    "epochs_part_of_another_program": (_each("epochs/*.parquet", _foreign_parquet), "epochs"),
    "thresholds_part_truncated": (_each("thresholds/*.parquet", _truncate), "thresholds"),
}


@pytest.mark.parametrize("case", sorted(PARTS))
def test_a_damaged_part_is_skipped_with_one_warning_line(sweep, tmp_path, capsys, case):
    damage, table = PARTS[case]
    d = damaged(sweep, tmp_path, damage)
    res = load_results(str(d))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {d / table}/part-") and "skipped" in err[0]
    assert getattr(res, table).empty and len(res.trials) == len(load_results(str(sweep[0])).trials)
    capsys.readouterr()
    assert main(["best", str(d)]) == 0  # the trials table alone ranks


def test_truncated_checkpoints_are_named_and_nothing_is_written(sweep, tmp_path, capsys):
    d = damaged(sweep, tmp_path, _each("*/checkpoint_*/checkpoint.pt", _truncate))
    for command in ("best", "predict"):
        assert main(COMMANDS[command](d, sweep[1], tmp_path)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert all(line.startswith(("warning: skipping ", "error: ")) for line in err) and "Traceback" not in err
        assert "no complete checkpoint" in err[-1]
    assert not (tmp_path / "p.csv").exists()
