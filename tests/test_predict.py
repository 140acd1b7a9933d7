"""The predictions CSV: well-formed for any file name, every skipped image reported, written atomically."""

import shutil

import pandas as pd

from hier_tl.cli import main


def test_odd_file_names_are_quoted_or_refused_and_said(run_dir, synth_dir, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = sorted((synth_dir / "test_images").iterdir())
    names = ["1.jpg", "a,b.jpg", 'say "hi".jpg', "tab\there.jpg", "new\nline.jpg", "é ü.jpg"]
    for name, s in zip(names, src):
        shutil.copy(s, imgs / name)
    out = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), "--images", str(imgs), "--out", str(out), "--threshold", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "2 image(s) skipped" in err and "'tab\\there.jpg'" in err and "'new\\nline.jpg'" in err
    df = pd.read_csv(out)  # a standard reader gets exactly one row per kept image back
    assert sorted(df.image) == sorted(["1.jpg", "a,b.jpg", 'say "hi".jpg', "é ü.jpg"])
    assert df.superclass_index.dtype.kind == "i" and df.subclass_index.dtype.kind == "i"


def test_a_failed_write_leaves_no_partial_csv(run_dir, synth_dir, tmp_path, monkeypatch, capsys):
    import csv
    import errno

    out = tmp_path / "p.csv"
    out.write_text("old predictions\n")

    class FullDisk:  # the disk fills up after the header, in the middle of the stream
        def __init__(self, f, **kw):
            self.f = f

        def writerow(self, row):
            self.f.write(",".join(row) + "\n")

        def writerows(self, rows):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(csv, "writer", FullDisk)
    assert main(["predict", str(run_dir), "--images", str(synth_dir / "test_images"), "--out", str(out),
                 "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: cannot write {out}: no space left on the device"
    assert out.read_text() == "old predictions\n" and [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def test_predictions_stream_in_chunks_in_file_name_order(run_dir, synth_dir, tmp_path):
    """Chunks of 2 images give the same CSV as one chunk of all: order, rows and values do not depend on it."""
    from hier_tl.predict.predict import Predictor, write_predictions
    p = Predictor.from_checkpoint(run_dir / "checkpoint.pt", 0.5)
    whole, pieces = tmp_path / "whole.csv", tmp_path / "pieces.csv"
    n = write_predictions(p, synth_dir / "test_images", whole, chunk=10_000)
    assert write_predictions(p, synth_dir / "test_images", pieces, chunk=2) == n
    assert pieces.read_text() == whole.read_text() and n == len(list((synth_dir / "test_images").iterdir()))


def test_predicted_indices_are_the_hand_computed_ones(tmp_path):
    """A model whose logits are known for each image colour: mean RGB -> features (identity projection) ->
    heads of weight 10. Mapping-file indices are not head positions (superclasses 0, 2, 5; novel 7 and 99),
    and a grey image is unfamiliar at both levels."""
    import torch
    from PIL import Image

    from hier_tl.data.taxonomy import LabelSpace
    from hier_tl.predict.predict import Predictor, write_predictions
    from hier_tl.train.models import Backbone, HierNet

    class MeanRGB(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    model = HierNet(Backbone(MeanRGB(), 3, [], ((0.5,) * 3, (0.5,) * 3)), n_super=3, n_sub=3, proj_dim=3, dropout=0)
    with torch.no_grad():  # proj = identity (inputs are in [-1, 1] after the norm; ReLU keeps the positive part)
        model.proj[0].weight.copy_(torch.eye(3))
        model.proj[0].bias.zero_()
        for head in (model.super_head, model.sub_head):
            head.weight.copy_(10 * torch.eye(3))
            head.bias.zero_()
    space = LabelSpace(supers=(0, 2, 5), subs=(10, 20, 50), sub_parent=(0, 1, 2), novel_super=7, novel_sub=99)
    colours = {"3.png": (255, 0, 0), "1.png": (0, 255, 0), "2.png": (0, 0, 255), "10.png": (128, 128, 128)}
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name, rgb in colours.items():
        Image.new("RGB", (8, 8), rgb).save(imgs / name)
    p = Predictor(model.eval(), space, ((0.5,) * 3, (0.5,) * 3), 8, 8, "msp", 0.9, 0.9, precision="fp32")
    assert write_predictions(p, imgs, tmp_path / "p.csv") == 4
    # red -> head 0 (superclass 0, subclass 10); green -> head 1 (2, 20); blue -> head 2 (5, 50);
    # grey -> every logit 0, msp 1/3 < 0.9: novel at both levels (7, 99); rows in numeric file-name order
    assert (tmp_path / "p.csv").read_text() == ("image,superclass_index,subclass_index\n"
                                                "1.png,2,20\n2.png,5,50\n3.png,0,10\n10.png,7,99\n")
