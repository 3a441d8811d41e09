"""`fastssl report few-label`: every row of the table, the CSV and markdown, the command."""

import argparse

import pytest

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.eval.features import build_random_method
from fastssl.report.few_label import Encoder, ReportSettings, few_label_report
from fastssl.report.table import markdown_report, markdown_table, read_csv, write_csv
from tests.eval.test_finetune import ColourSource, tiny_cfg


@pytest.fixture(scope="module")
def rows():
    cfg = tiny_cfg()
    encoders = [Encoder("a", build_random_method(cfg, seed=1), cfg), Encoder("b", build_random_method(cfg, seed=2), cfg)]
    scratch = Encoder("scratch", build_random_method(cfg), cfg)
    settings = ReportSettings(labels_per_class=(2, 3), seeds=(0, 1), steps=3, lr=0.05, device="cpu",
                              probe_steps=(5, 20))
    return few_label_report(encoders, scratch, ColourSource(45), ColourSource(15, seed=1), settings, log=lambda _: None)


def test_every_setting_has_every_row(rows):
    kinds = {(r["encoder"], r["evaluation"]) for r in rows}
    assert kinds >= {("scratch", "fine-tune"), ("random init", "linear"), ("a", "linear"), ("a", "projector linear"),
                     ("a", "fine-tune"), ("b", "linear"), ("b", "projector linear"), ("b", "fine-tune")}
    selftrain = [k for k in kinds if k[0].startswith("self-training on ")]
    assert len(selftrain) >= 1 and all(ev == "student round 1" for _, ev in selftrain)
    for n in (2, 3):
        for seed in (0, 1):
            mine = [r for r in rows if r["labels_per_class"] == n and r["seed"] == seed]
            assert len(mine) == 9  # 5 probes + 3 fine-tunes + 1 student
            assert all(0.0 <= r["top1"] <= 100.0 and r["seconds"] >= 0 for r in mine)
    # The student builds on the best fine-tune of its setting.
    for n in (2, 3):
        fine = {e: sum(r["top1"] for r in rows if r["evaluation"] == "fine-tune" and r["encoder"] == e
                       and r["labels_per_class"] == n) for e in ("scratch", "a", "b")}
        student = next(r for r in rows if r["evaluation"] == "student round 1" and r["labels_per_class"] == n)
        assert student["encoder"] == f"self-training on {max(fine, key=fine.get)}"


def test_csv_round_trip_and_markdown(rows, tmp_path):
    path = write_csv(rows, tmp_path / "out" / "few_label.csv", "colours")
    back = read_csv(path)
    assert len(back) == len(rows) and back[0]["dataset"] == "colours"
    assert [r["top1"] for r in back] == [r["top1"] for r in rows]
    table = markdown_table(back).splitlines()
    assert table[0] == "| encoder | evaluation | 2 labels/class | 3 labels/class |"
    assert len(table) == 2 + len({(r["encoder"], r["evaluation"]) for r in rows})
    assert all(" ± " in line for line in table[2:])  # two seeds: mean ± std
    report = markdown_report(back, {"dataset": "colours", "hardware": "test"})
    assert report.startswith("## Few-label top-1 (%) on colours") and "- hardware: test" in report


def _save_run(tmp_path, name, seed):
    from fastssl.checkpoint import save_checkpoint

    cfg = Config()
    cfg.model.name, cfg.data.image_size, cfg.data.num_workers = "resnet-tiny", 8, 0
    cfg.method.proj_hidden_dim, cfg.method.proj_dim = 16, 8
    method = build_random_method(cfg, seed=seed)
    run = tmp_path / name
    save_checkpoint(run, 5, method.state_dict(), {}, {"config": cfg.to_dict(), "step": 5, "epoch": 1}, keep_last=1)
    return str(run)


def test_command_writes_csv_and_markdown(tmp_path, capsys):
    from fastssl.report.commands import add_parser

    parser = argparse.ArgumentParser(prog="fastssl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    run = _save_run(tmp_path, "run", 3)
    out = tmp_path / "report"
    args = parser.parse_args(["report", "few-label", "--ckpt", f"simclr={run}", "--labels-per-class", "2",
                              "--seeds", "0", "--steps", "2", "--probe-steps", "5,20", "--selftrain-rounds", "0", "--out", str(out),
                              "--device", "cpu", "--num-workers", "0", "--quiet"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "| simclr | fine-tune |" in printed and "| scratch | fine-tune |" in printed
    rows = read_csv(out / "few_label.csv")
    assert {r["encoder"] for r in rows} == {"scratch", "random init", "simclr"}
    md = (out / "few_label.md").read_text()
    assert "1617 training images, 180 held-out test images" in md and "- hardware: " in md
    with pytest.raises(FastSSLError, match="NAME=RUN"):
        args = parser.parse_args(["report", "few-label", "--ckpt", run])
        args.func(args)
    with pytest.raises(FastSSLError, match="--labels-per-class"):
        args = parser.parse_args(["report", "few-label", "--ckpt", f"a={run}", "--labels-per-class", "x"])
        args.func(args)
