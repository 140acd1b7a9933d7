"""The `hier-tl` command line: every command explains itself; a user's mistake is one line on stderr and exit 2
(an environment failure exit 1), with the traceback only under --debug."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from hier_tl import cli
from hier_tl.cli import build_parser, main
from hier_tl.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [("data",), ("data", "check"), ("data", "synth"), ("train",), ("score",), ("sweep",), ("report",),
            ("best",), ("predict",), ("export",), ("cleanup",)]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """name -> (its parser, the help line its parent lists it with)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            return {name: (p, helps.get(name)) for name, p in action.choices.items()}
    return {}


def walk(parser, path=()):
    for name, (p, line) in subparsers(parser).items():
        yield path + (name,), p, line
        yield from walk(p, path + (name,))


def test_the_parser_has_exactly_the_documented_commands():
    assert [path for path, _, _ in walk(build_parser())] == COMMANDS


@pytest.mark.parametrize("path", [()] + COMMANDS, ids=lambda p: " ".join(p) or "hier-tl")
def test_help_exits_0_and_explains_every_argument(path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words
    assert out.startswith(f"usage: {' '.join(('hier-tl',) + path)} ")
    parser = dict((p, q) for p, q, _ in walk(build_parser())).get(path) or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, (_, line) in subparsers(parser).items():
                assert line and name in out and " ".join(line.split()) in out, f"{name} has no help line"
        elif action.help:
            assert " ".join(action.help.split()).replace("%%", "%") in out
        else:  # no help text: its choices must say it all (`--format {yaml,json}`)
            assert action.choices, f"{' '.join(path)} {action.option_strings or action.dest}: no help text"
            assert "{" + ",".join(action.choices) + "}" in out


@pytest.mark.parametrize("argv, message", [
    (["data", "synth", "{tmp}/s", "--n-super", "99"], "error: n_super: 99 is out of range; must be in [1, 7]"),
    (["train", "--data", "{tmp}", "--out", "{tmp}/run", "--set", "lern_rate=1"], "error: unknown key(s) lern_rate;"),
    (["train", "--data", "{tmp}", "--out", "{tmp}/run", "--set", "lr"], "error: --set 'lr': expected key=value"),
    (["best", "{tmp}"], "error: {tmp}: no trials.parquet here (expected a sweep results folder"),
])
def test_a_user_error_is_one_line_on_stderr_and_exit_2(tmp_path, capsys, argv, message):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(message.format(tmp=tmp_path)) and "Traceback" not in err
    assert out == ""


def test_data_problems_are_listed_one_per_line_under_a_count(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: 4 problem(s) in the data:"
    assert lines[1:] == [f"  {tmp_path / n}: {what}" for n, what in (
        ("train_images", "image folder is missing"), ("superclass_mapping.csv", "mapping file is missing"),
        ("subclass_mapping.csv", "mapping file is missing"), ("train_data.csv", "training CSV is missing"))]


def test_score_without_mapping_files_names_only_what_it_needs(tmp_path, capsys):
    for name in ("p.csv", "l.csv"):
        (tmp_path / name).write_text("image,superclass_index,subclass_index\na.jpg,0,0\n")
    assert main(["score", str(tmp_path / "p.csv"), str(tmp_path / "l.csv"), "--data", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert "superclass_mapping.csv" in "\n".join(lines) and "train_images" not in "\n".join(lines)
    assert all(line.startswith("  ") for line in lines[1:])


def _denied(args):
    raise PermissionError(13, "Permission denied", "/data/train_images")


def test_a_failing_file_system_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "cmd_data_check", _denied)  # the environment failing under any command
    assert main(["data", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "error: /data/train_images: permission denied (or a read-only file system)\n"


def test_debug_lets_the_exception_through_with_its_traceback(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"n_super: 99 is out of range; must be in \[1, 7\]"):
        main(["--debug", "data", "synth", str(tmp_path / "s"), "--n-super", "99"])
    monkeypatch.setattr(cli, "cmd_data_check", _denied)
    with pytest.raises(PermissionError):
        main(["--debug", "data", "check", str(tmp_path)])


@pytest.mark.slow
def test_debug_prints_the_traceback_in_a_real_process(tmp_path):
    argv = [sys.executable, "-m", "hier_tl.cli", "data", "synth", str(tmp_path / "s"), "--n-super", "99"]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    debug = subprocess.run(argv[:3] + ["--debug"] + argv[3:], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert plain.returncode == 2 and plain.stderr == "error: n_super: 99 is out of range; must be in [1, 7]\n"
    assert debug.returncode == 1 and debug.stderr.startswith("Traceback (most recent call last):")
    assert debug.stderr.rstrip().endswith("ConfigError: n_super: 99 is out of range; must be in [1, 7]")


@pytest.mark.parametrize("argv, needle", [
    ([], "the following arguments are required: COMMAND"),
    (["nope"], "invalid choice: 'nope'"),
    (["data"], "the following arguments are required: SUBCOMMAND"),
    (["best", "r", "--mode", "sideways"], "argument --mode: invalid choice: 'sideways'"),
    (["data", "check", "d", "--image-size", "0"], "expected a positive integer, got '0'"),
    (["train", "--out", "o"], "the following arguments are required: --data"),
])
def test_a_malformed_command_line_says_what_is_wrong_and_exits_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hier-tl") and needle in err.splitlines()[-1]


def test_cleanup_with_nothing_left_behind(capsys):
    assert main(["cleanup"]) == 0
    assert capsys.readouterr().out == "no leftover Ray processes\n"


@pytest.mark.slow
def test_help_imports_neither_torch_nor_ray():
    code = ("import sys\nfrom hier_tl.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.stderr.strip() == "[]"
