"""core.progressbar: long work says how far it is, with rate and ETA: a bar on a terminal, plain lines in a log."""

import io

from hier_tl.core.progressbar import progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_plain_lines_with_count_rate_and_eta_and_no_carriage_return():
    out = io.StringIO()
    with progress(100, "predict", every=0.0, file=out) as bar:
        for _ in range(4):
            bar.update(25)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("predict: 25/100 images (") and "/s, ETA " in lines[0]
    assert lines[-1].startswith("predict: 100/100 images (") and "ETA" not in lines[-1]  # done: no ETA


def test_a_log_is_not_flooded():
    out = io.StringIO()
    with progress(10_000, "decode", every=3600.0, file=out) as bar:
        for _ in range(10_000):
            bar.update(1)
    assert len(out.getvalue().splitlines()) == 1  # only the closing line within an hour


def test_a_terminal_gets_tqdm():
    out = Tty()
    with progress(10, "predict", file=out) as bar:
        bar.update(10)
    assert "10/10" in out.getvalue() and "images" in out.getvalue()
