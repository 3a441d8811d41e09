"""The Python API (fastssl/api.py) as a notebook uses it: no exits, FastSSLError for user errors."""

import pytest

import fastssl
from tests.train.conftest import tiny_overrides


def _tiny(out) -> dict:
    return dict(a.lstrip("-").split("=", 1) for a in tiny_overrides(out))


def test_config_train_evaluate_and_load_backbone(tmp_path):
    import fastssl.train.trainer  # noqa: F401  (the subpackage import must not hide fastssl.train)

    cfg = fastssl.load_config("default", {**_tiny(tmp_path / "run"), "train.max_steps": 2})
    cfg.train.knn_at_end = True
    result = fastssl.train(cfg)
    assert result.summary["step"] == 2 and result.checkpoint.exists() and result.stopped is None
    assert [r["step"] for r in result.metrics if r["kind"] == "train"] == [1, 2]
    knn = fastssl.evaluate(result.out, "knn", k=5)
    assert knn["task"] == "knn" and 0 <= knn["top1"] <= 100 and knn["k"] == 5
    backbone, spec = fastssl.load_backbone(result.out)
    assert spec["model"] == "resnet-tiny" and not backbone.training


def test_user_errors_raise_fastssl_error_and_never_exit(tmp_path):
    cfg = fastssl.load_config()
    with pytest.raises(fastssl.FastSSLError, match="train.batch_size is an int"):
        cfg.train.batch_size = "many"
    with pytest.raises(fastssl.FastSSLError, match="Did you mean 'batch_size'"):
        cfg.train.bach_size = 8
    with pytest.raises(fastssl.FastSSLError, match="--data.limit=-3 must be >= 0"):
        fastssl.load_config("default", {"data.limit": -3})
    with pytest.raises(fastssl.FastSSLError, match="Did you mean 'vicreg-cpu'"):
        fastssl.load_config("vicreg-cp")
    with pytest.raises(fastssl.FastSSLError, match="no option 'kk'"):
        fastssl.evaluate(None, "knn", kk=3)


def test_yaml_file_and_nested_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("recipe: mocov2-cpu\ntrain:\n  epochs: 3\n")
    cfg = fastssl.load_config(overrides=path)
    assert (cfg.recipe, cfg.method.name, cfg.train.epochs) == ("mocov2-cpu", "mocov2", 3)
    cfg = fastssl.load_config("default", {"train": {"epochs": 4}, "method.name": "byol"})
    assert (cfg.train.epochs, cfg.method.name) == (4, "byol")
