"""YAML/JSON config files, the key help read from field comments, and `fastssl config` rejecting
what `train` rejects."""

import dataclasses
import json

import pytest

from fastssl.cli import main
from fastssl.config import Config, method_configs
from fastssl.config.files import config_yaml, read_config_file, save_config
from fastssl.config.key_help import field_help, first_sentence
from fastssl.recipes import RECIPES, get_recipe
from tests.train.conftest import tiny_overrides


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("recipe", RECIPES.names())
def test_saved_yaml_reads_back_as_the_same_config(recipe, tmp_path):
    cfg = get_recipe(recipe)
    save_config(cfg, str(tmp_path / "run.yaml"))
    base, keys = read_config_file(str(tmp_path / "run.yaml"))
    assert base == recipe
    again = Config.from_dict({"recipe": base, **_nest(keys)})
    assert again.to_dict() == cfg.to_dict()


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        section, name = key.split(".")
        out.setdefault(section, {})[name] = value
    return out


def test_every_key_has_help_from_its_field_comment():
    sections = [type(getattr(Config(), f.name)) for f in dataclasses.fields(Config) if f.name != "recipe"]
    for cls in [*sections, *method_configs().values()]:
        missing = [k for k, v in field_help(cls).items() if not v]
        assert not missing, f"{cls.__name__}: no comment above or beside {missing}"


def test_field_help_reads_blocks_inline_comments_and_shared_blocks():
    @dataclasses.dataclass
    class Demo:
        # Two lines of help,
        # joined. Second sentence.
        a: int = 1
        b: str = "#not a comment"  # its own
        # Shared by the next two.
        c: int = 0
        d: int = 0

        def method(self):
            x: int = 3  # noqa: F841 (not a field)

    helps = field_help(Demo)
    assert helps["a"] == "Two lines of help, joined. Second sentence."
    assert helps["b"] == "its own" and helps["c"] == helps["d"] == "Shared by the next two."
    assert first_sentence(helps["a"]) == "Two lines of help, joined"
    assert first_sentence("Chen et al. 2020 (Sec. 3.3): a head. More.") == "Chen et al. 2020 (Sec. 3.3): a head"


def test_yaml_file_trains_and_is_checked_like_flags(tmp_path, capsys):
    f = tmp_path / "run.yaml"
    assert main(["config", "--recipe", "default", "--save", str(f)]) == 0
    assert "train it with: fastssl train --config" in _err(capsys)[0]
    text = f.read_text()
    assert "  # Global batch across all ranks" in text and "\ntrain:\n" in text
    out = tmp_path / "run"
    assert main(["train", "--config", str(f), *tiny_overrides(out), "--train.max_steps=1"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["max_steps"] == 1
    capsys.readouterr()
    f.write_text("train:\n  bach_size: 8\n")
    assert main(["config", "--config", str(f)]) == 2
    assert "Did you mean 'train.batch_size'" in _err(capsys)[0]
    f.write_text("train: [1, 2\n")
    assert main(["config", "--config", str(f)]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "not valid YAML (line" in err[0]
    f.write_text("train:\n  batch_size: many\n")
    assert main(["config", "--config", str(f)]) == 2
    assert "train.batch_size is an int" in _err(capsys)[0]


def test_keys_lists_each_key_with_its_help(capsys):
    assert main(["config", "--recipe", "dino-cpu", "--keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("method.teacher_temp = ") and "# main_dino.py" in line for line in lines)
    assert any(line.startswith("data.limit = 0") and "# Use only the first N training images" in line for line in lines)


@pytest.mark.parametrize("flag, fragment", [
    ("--data.image_size=0", "--data.image_size=0 must be >= 1"),
    ("--optim.base_lr=-1", "--optim.base_lr=-1.0 must be > 0"),
    ("--model.name=resnet999", "unknown --model.name='resnet999'"),
    ("--data.limit=-3", "--data.limit=-3 must be >= 0"),
    ("--train.time_budget=soon", "is not a duration"),
    ("--eval.knn_every=often", "--eval.knn_every='often' is neither"),
    ("--dist.strategy=fsd", "Did you mean 'fsdp'"),
    ("--data.backend=dalli", "must be auto, torch"),
    ("--model.name=vit_nano --model.patch_size=5", "not a multiple of --model.patch_size=5"),
])
def test_config_rejects_what_train_rejects(flag, fragment, capsys, tmp_path):
    flags = flag.split()
    assert main(["config", *flags]) == 2
    err = _err(capsys)
    assert len(err) == 1 and fragment in err[0], err
    assert main(["train", *tiny_overrides(tmp_path / "run"), *flags]) == 2
    assert fragment in _err(capsys)[0]
    assert not (tmp_path / "run").exists()  # refused before any work


def test_yaml_of_a_config_quotes_what_yaml_would_misread():
    cfg = get_recipe("default")
    cfg.train.time_budget, cfg.data.path = "10m", "data: weird#path"
    text = config_yaml(cfg)
    assert "time_budget: 10m" in text and "path: 'data: weird#path'" in text
