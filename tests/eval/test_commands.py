import argparse
import json
import re

import pytest
import torch

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.eval.commands import add_parser
from fastssl.data import open_source
from fastssl.eval.features import build_random_method, source_features
from fastssl.eval.knn import knn_accuracy
from fastssl.checkpoint import load_pretrained, save_checkpoint


def make_run(tmp_path, **data) -> str:
    """A run folder holding one checkpoint of a tiny SimCLR on digits at 8 px."""
    cfg = Config()
    cfg.model.name, cfg.data.image_size = "resnet-tiny", 8
    cfg.method.proj_hidden_dim, cfg.method.proj_dim = 32, 16
    cfg.data.num_workers = 0
    for key, value in data.items():
        setattr(cfg.data, key, value)
    method = build_random_method(cfg, seed=3)
    run = tmp_path / "run"
    save_checkpoint(run, 7, method.state_dict(), {}, {"config": cfg.to_dict(), "step": 7, "epoch": 1}, keep_last=3)
    return str(run)


def parse(argv):
    parser = argparse.ArgumentParser(prog="fastssl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run_json(capsys, argv) -> dict:
    args = parse(["eval", *argv, "--json", "--num-workers", "0", "--device", "cpu"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("ckpt"))


def test_knn_end_to_end_on_digits_with_a_checkpoint(run, capsys):
    r = run_json(capsys, ["knn", "--ckpt", run, "--limit-train", "300", "--k", "50"])
    assert 0.0 <= r["top1"] <= 100.0 and 0.0 <= r["top5"] <= 100.0
    # digits: 1617 train / 180 test (a fixed 10% hold-out), the train side limited to 300.
    assert (r["n_train"], r["n_test"], r["k"], r["t"]) == (300, 180, 50, 0.1)
    assert r["ckpt"].endswith("step_00000007") and r["image_size"] == 8 and r["task"] == "knn"
    assert r["seconds"] > 0
    # The command computes what the library functions compute on the same data.
    method, cfg = load_pretrained(run)
    train, test = open_source("", "digits", "train").head(300), open_source("", "digits", "test")
    x, y = source_features(method, train, cfg, "cpu")
    xt, yt = source_features(method, test, cfg, "cpu")
    assert r["top1"] == knn_accuracy(x, y, xt, yt, 10, k=50, t=0.1)["top1"]


def test_knn_human_line(run, capsys):
    args = parse(["eval", "knn", "--ckpt", run + "/checkpoints/step_00000007", "--limit-train", "100",
                  "--num-workers", "0"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"knn top-1 \d+\.\d%, top-5 \d+\.\d% \(k=100, T=0\.1, 100 train / 180 test\)", out), out


def test_random_init_uses_the_recipe(capsys):
    r = run_json(capsys, ["knn", "--random-init", "--limit-train", "100"])
    assert r["ckpt"] is None and r["recipe"] == "default"
    assert r["image_size"] == 16 and r["model"] == "resnet-tiny"
    assert 0.0 <= r["top1"] <= 100.0 and r["n_train"] == 100


def test_random_init_like_a_run_uses_its_model(run, capsys):
    r = run_json(capsys, ["knn", "--random-init", "--like", run, "--limit-train", "100"])
    ckpt = run_json(capsys, ["knn", "--ckpt", run, "--limit-train", "100"])
    assert r["ckpt"] is None and (r["model"], r["image_size"]) == (ckpt["model"], ckpt["image_size"])
    assert r["top1"] != ckpt["top1"] or r["top5"] != ckpt["top5"]


def test_linear_reports_backbone_and_projector(run, capsys):
    r = run_json(capsys, ["linear", "--ckpt", run, "--limit-train", "200", "--epochs", "3"])
    assert 0.0 <= r["top1"] <= 100.0
    assert r["projector_top1"] is not None and 0.0 <= r["projector_top1"] <= 100.0
    assert r["epochs"] == 3


def test_finetune_few_labels(run, capsys):
    r = run_json(capsys, ["finetune", "--ckpt", run, "--labels-per-class", "2", "--epochs", "1"])
    assert r["n_labelled"] == 20 and r["labels_per_class"] == 2
    assert 0.0 <= r["top1"] <= 100.0


def test_plot_writes_png(run, tmp_path, capsys):
    out = tmp_path / "plots" / "tsne.png"
    r = run_json(capsys, ["plot", "--ckpt", run, "--out", str(out), "--max-points", "60"])
    assert r["out"] == str(out) and r["points"] == 60
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["knn"], ["knn", "--ckpt", "x", "--random-init"]])
def test_exactly_one_model_source_is_required(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(["eval", *argv])
    assert e.value.code == 2
    assert "--ckpt" in capsys.readouterr().err


def test_checkpoint_errors(tmp_path):
    missing = parse(["eval", "knn", "--ckpt", str(tmp_path / "nope.pt")])
    with pytest.raises(FastSSLError, match="does not exist"):
        missing.func(missing)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    foreign = parse(["eval", "knn", "--ckpt", str(tmp_path / "foreign.pt")])
    with pytest.raises(FastSSLError, match="not a fastssl checkpoint"):
        foreign.func(foreign)
    (tmp_path / "garbage.pt").write_bytes(b"not a pickle at all")
    garbage = parse(["eval", "knn", "--ckpt", str(tmp_path / "garbage.pt")])
    with pytest.raises(FastSSLError, match="corrupt or not a fastssl checkpoint"):
        garbage.func(garbage)
    (tmp_path / "empty_run").mkdir()
    empty = parse(["eval", "knn", "--ckpt", str(tmp_path / "empty_run")])
    with pytest.raises(FastSSLError, match="no checkpoints"):
        empty.func(empty)


def test_data_errors(tmp_path, run):
    needs_path = make_run(tmp_path, dataset="npz", path="")
    args = parse(["eval", "knn", "--ckpt", needs_path])
    with pytest.raises(FastSSLError, match="--data.train PATH"):
        args.func(args)
    args = parse(["eval", "knn", "--ckpt", run, "--data.test", str(tmp_path / "missing.npz")])
    with pytest.raises(FastSSLError, match="--data.test"):
        args.func(args)
    args = parse(["eval", "knn", "--ckpt", run, "--recipe", "default"])
    with pytest.raises(FastSSLError, match="--random-init"):
        args.func(args)


def test_cli_prints_user_errors_as_one_line(tmp_path, capsys):
    from fastssl.cli import main

    assert main(["eval", "knn", "--ckpt", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastssl: error: ") and "\n" not in err
