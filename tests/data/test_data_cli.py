"""What a newcomer types, run through the CLI on tiny data: `fastssl train` with data options.

- `--data.backend=auto` trains on a CPU machine, DALI installed or not;
- `--data.path my_images/` on the default recipe (which pins the built-in digits) reads the
  folder, guessing its format, and says so in one line;
- a data or augmentation setting that cannot work stops with one line naming the `--key`.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastssl.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _tiny_overrides(out) -> list[str]:
    """The trainer tests' tiny run (tests/train/conftest.py), so both stay in step."""
    spec = importlib.util.spec_from_file_location("_train_conftest", ROOT / "tests" / "train" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.tiny_overrides(out) + ["--train.epochs=1"]


def _train(tmp_path, *extra) -> int:
    return main(["train", *_tiny_overrides(tmp_path / "run"), *extra, "--json"])


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_with_backend_auto(tmp_path, capsys):
    """Regression: with DALI installed on a CPU machine, auto resolved to dali-cpu but the DALI
    loader re-read "auto" from the config, took it for "dali" and asked for a CUDA GPU."""
    assert _train(tmp_path, "--data.backend=auto") == 0
    assert _summary(capsys)["step"] == 3


@pytest.fixture
def my_images(tmp_path):
    """A tiny ImageFolder: 2 classes x 12 PNGs of 10x10 px."""
    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        (tmp_path / "my_images" / c).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "my_images" / c / f"{i}.png")
    return tmp_path / "my_images"


def test_train_reads_a_data_path_given_on_the_default_recipe(tmp_path, my_images, capsys):
    # The end-of-run kNN reads the same folder's held-out split: the guess applies there too.
    rc = _train(tmp_path, f"--data.path={my_images}", "--train.knn_at_end=true", "--eval.knn_k=5")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    notes = [ln for ln in captured.err.splitlines() if "reading --data.path" in ln]  # --json: notes on stderr
    assert len(notes) == 1 and "--data.dataset=folder" in notes[0] and str(my_images) in notes[0]
    summary = json.loads(captured.out.strip().splitlines()[-1])
    # 24 images, 10% held out: 22 train, one global batch of 16 per epoch.
    assert summary["step"] == 1 and 0.0 <= summary["knn_top1"] <= 100.0


@pytest.mark.parametrize(
    "override, key",
    [
        ("--data.backend=dali", "--data.backend"),  # no GPU here (or no DALI)
        ("--data.backend=pytorch", "--data.backend"),
        ("--data.dataset=imagenet", "--data.dataset"),
        ("--data.path=/no/such/images", "--data.path"),
        ("--data.num_workers=-1", "--data.num_workers"),
        ("--data.image_size=1", "--data.image_size"),
        ("--data.val_fraction=1.5", "--data.val_fraction"),
        ("--aug.flip_p=2", "--aug.flip_p"),
        ("--aug.local_blur_p=1.5", "--aug.local_blur_p"),
        ("--aug.crop_scale_min=0", "--aug.crop_scale_min"),
    ],
)
def test_data_errors_name_the_key_to_change(tmp_path, capsys, override, key):
    assert _train(tmp_path, override) == 2
    lines = capsys.readouterr().err.strip().splitlines()  # under --json the start lines go to stderr too
    err = [line for line in lines if line.startswith("fastssl: error:")]
    assert len(err) == 1 and err[0] == lines[-1] and key in err[0], lines


def test_gpu_tensor_dtype_error_names_the_key(tmp_path, capsys):
    assert _train(tmp_path, "--data.backend=gpu-tensor", "--data.dtype=float16") == 2
    assert "--data.dtype" in capsys.readouterr().err


def test_convert_from_the_built_in_digits_and_errors_name_src(tmp_path, capsys):
    from fastssl.cli import main

    assert main(["data", "convert", "digits", str(tmp_path / "d"), "--from", "digits", "--to", "npz"]) == 0
    assert main(["data", "convert", str(tmp_path / "missing"), str(tmp_path / "e"), "--to", "npz"]) == 2
    err = capsys.readouterr().err
    assert "fix SRC" in err and "--data.path" not in err
