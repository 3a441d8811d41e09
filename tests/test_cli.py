import json

import pytest

from fastssl.cli import main


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--train.batch_sise=3"], "Did you mean 'train.batch_size'"),
        (["train", "--recipe", "simclr-cifar"], "unknown recipe"),
        (["train", "--train.epochs"], "has no value"),
        (["train", "stray"], "--section.key=value"),
        (["train", "--data.path=/no/such/folder", "--data.dataset=npz"], "/no/such/folder"),
        (["train", "--config", "/no/such.json"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--train.progress=false"] if argv[-1] != "--train.epochs" else argv) == 2
    lines = _err(capsys)
    assert len(lines) == 1 and lines[0].startswith("fastssl: error:") and fragment in lines[0]


def test_config_prints_resolved_values_and_keys(capsys):
    assert main(["config", "--recipe", "byol-resnet18-cifar10", "--train.epochs=3", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["method"]["name"] == "byol" and cfg["train"]["epochs"] == 3
    assert main(["config", "--keys"]) == 0
    assert "optim.base_lr" in capsys.readouterr().out.split()


def test_config_file_then_overrides(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"train": {"epochs": 5, "batch_size": 64}, "recipe": "ignored"}))
    assert main(["config", "--config", str(f), "--train.epochs=6", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (6, 64)
    f.write_text("{broken")
    assert main(["config", "--config", str(f)]) == 2
    assert "not valid JSON" in _err(capsys)[0]
    f.write_text(json.dumps({"train": {"epoch": 5}}))
    assert main(["config", "--config", str(f)]) == 2
    assert "train.epochs" in _err(capsys)[0]


def test_recipes_lists_every_recipe(capsys):
    from fastssl.recipes import RECIPES

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES)


def test_train_out_alias_and_json_summary(tmp_path, capsys):
    from tests.train.conftest import tiny_overrides

    args = [a for a in tiny_overrides(tmp_path / "ignored") if not a.startswith("--train.out")]
    assert main(["train", "--out", str(tmp_path / "alias"), "--json", *args, "--train.epochs=1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3 and (tmp_path / "alias" / "config.json").exists()
    # A resume reports what it changes against the run's saved config: here nothing.
    assert main(["train", "--out", str(tmp_path / "alias"), "--resume", *args, "--train.epochs=1"]) == 0
    assert "(no config changes)" in capsys.readouterr().out
