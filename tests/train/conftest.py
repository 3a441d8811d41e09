import pytest

from fastssl.recipes import get_recipe


def tiny_overrides(out) -> list[str]:
    """A run that takes a second or two on one CPU core: 48 digits at 8 px, 3 steps per epoch."""
    return [
        f"--train.out={out}", "--data.limit=48", "--data.image_size=8", "--data.num_workers=0",
        "--train.batch_size=16", "--train.epochs=2", "--train.progress=false", "--train.tensorboard=false",
        "--train.knn_at_end=false", "--train.log_every=1", "--method.proj_hidden_dim=16",
        "--method.proj_dim=8", "--optim.warmup_epochs=1",
    ]


@pytest.fixture
def tiny_cfg(tmp_path):
    from fastssl.config import apply_overrides

    def make(*extra, out=None):
        return apply_overrides(get_recipe("default"), tiny_overrides(out or tmp_path / "run") + list(extra))

    return make
