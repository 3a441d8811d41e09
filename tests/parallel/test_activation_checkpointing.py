"""--train.activation_checkpointing recomputes each block in backward: same step, same names."""

import pytest
import torch
import torch.distributed as dist

from fastssl.config import Config, apply_overrides
from fastssl.distributed import World
from fastssl.methods import build_method
from fastssl.parallel.engines import build_engine
from fastssl.train.bn_guard import BatchNormGuard
from fastssl.train.optim import build_optimizer
from fastssl.train.step import OK, train_step


@pytest.fixture
def no_process_group_after():
    yield
    if dist.is_initialized():  # FSDP2 on one process made a 1-rank group; leave none behind
        dist.destroy_process_group()


def _one_step(strategy: str, checkpointing: bool):
    cfg = apply_overrides(Config(), ["--method.name=simclr", "--model.name=vit_nano", "--model.patch_size=4",
                                     "--data.image_size=8", "--method.proj_hidden_dim=16", "--method.proj_dim=8",
                                     "--optim.name=sgd", f"--dist.strategy={strategy}",
                                     f"--train.activation_checkpointing={checkpointing}"])
    engine = build_engine(cfg, World())
    torch.manual_seed(0)
    engine.wrap(build_method(cfg), lambda m: build_optimizer(m, cfg.optim, 0.1))
    views = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    calls = []
    # The recomputation calls the block's forward directly, so hook a module inside it.
    engine.method.backbone.blocks()[0].attn.register_forward_hook(lambda *a: calls.append(1))
    out = train_step(engine, engine.method, views, 0, 10, 0, 0.1, BatchNormGuard(engine.method))
    assert out.status == OK
    assert len(calls) == (2 if checkpointing else 1)  # recomputed in backward, or not
    return out.outputs["loss"].item(), {k: v.full_tensor() if hasattr(v, "full_tensor") else v
                                        for k, v in engine.method.state_dict().items()}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_checkpointed_blocks_give_the_same_step(strategy, no_process_group_after):
    loss, plain = _one_step(strategy, False)
    loss_ac, ac = _one_step(strategy, True)
    assert loss_ac == loss
    assert ac.keys() == plain.keys()  # the composable checkpoint renames nothing
    for k in plain:
        torch.testing.assert_close(ac[k], plain[k], rtol=1e-6, atol=1e-7, msg=k)
