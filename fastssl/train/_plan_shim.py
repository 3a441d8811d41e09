"""TEMPORARY: the StepPlan interface until fastssl/train/time_budget.py provides build_plan."""
from dataclasses import dataclass


@dataclass
class ScheduleAt:
    step: float
    total: float
    warmup: float
    momentum_len: float


class FixedPlan:
    def __init__(self, total_steps, warmup_steps):
        self.total_steps, self.warmup = total_steps, warmup_steps

    def at(self, step):
        return ScheduleAt(step, self.total_steps, self.warmup, self.total_steps)

    def on_loader_start(self, step, now):
        pass

    def after_step(self, step, now):
        return None

    def account(self, kind, seconds):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def summary(self):
        return {}


def build_plan(cfg, steps_per_epoch, warmup_steps, prefetch_depth, now):
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps) if cfg.train.epochs else cfg.train.max_steps
    if cfg.train.time_budget:
        raise NotImplementedError
    return FixedPlan(total, warmup_steps)
