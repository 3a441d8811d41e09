"""What a user can get wrong about the scale-out options: one line each, exit status 2."""

import sys

import fastssl.train.trainer as trainer
from fastssl.cli import main
from fastssl.distributed import World
from tests.train.conftest import tiny_overrides


def _fails(capsys, *args):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastssl: error: "), err
    return err[0]


def test_unknown_strategy(tmp_path, capsys):
    line = _fails(capsys, *tiny_overrides(tmp_path), "--dist.strategy=fdsp")
    assert "--dist.strategy='fdsp'" in line and "Did you mean 'fsdp'" in line


def test_zero_stage_4(tmp_path, capsys):
    line = _fails(capsys, *tiny_overrides(tmp_path), "--dist.strategy=deepspeed", "--dist.zero_stage=4")
    assert "--dist.zero_stage=4" in line and "1, 2 or 3" in line


def test_deepspeed_not_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # `import deepspeed` now raises ImportError
    line = _fails(capsys, *tiny_overrides(tmp_path), "--dist.strategy=deepspeed", "--optim.name=sgd")
    assert "needs DeepSpeed" in line and "--dist.strategy=fsdp" in line


def test_world_size_not_dividing_the_batch(tmp_path, capsys, monkeypatch):
    # What torchrun --nproc_per_node=3 would hand the trainer, without starting 3 processes.
    monkeypatch.setattr(trainer, "init_distributed", lambda *a: World(world_size=3))
    monkeypatch.setattr(trainer, "destroy_distributed", lambda: None)
    line = _fails(capsys, *tiny_overrides(tmp_path), "--dist.strategy=fsdp")
    assert "--train.batch_size to a multiple of 3" in line


def test_resume_from_a_checkpoint_of_another_model(tmp_path, capsys):
    assert main(["train", *tiny_overrides(tmp_path), "--train.max_steps=1"]) == 0
    capsys.readouterr()
    line = _fails(capsys, *tiny_overrides(tmp_path), "--train.max_steps=2", "--resume",
                  "--model.name=vit_nano", "--model.patch_size=4", "--dist.strategy=fsdp")
    assert "holds a simclr/resnet-tiny model" in line and "--model.name is 'resnet-tiny' there and 'vit_nano' here" in line
