"""The trainer's learning-rate schedules, as a stateless function of the fractional epoch."""
from __future__ import annotations

import math
from typing import Any, Dict

__all__ = ["LRSchedule"]


class LRSchedule:
    """Learning rate as a function of the fractional epoch ``t`` (epoch + step / steps).

    * ``cosine``: lr_min + (lr - lr_min) (1 + cos(pi e / epochs)) / 2 with e = floor(t)
      (per epoch, as DARTS);
    * ``linear``: lr (1 - e / epochs), decayed after each epoch;
    * ``step``: lr * gamma ** (number of milestones m with m * epochs <= t): milestones
      are fractions of the run, so ``--set training.epochs=3`` shrinks the whole recipe
      as it does for cosine and linear;
    * ``exponential``: lr * gamma ** floor(t / step_epochs) (0.973 every 0.8 epoch).

    Stateless: a resume only needs the epoch, so it is exact by construction."""

    def __init__(self, optim_cfg: Any, epochs: int):
        self.cfg, self.epochs = optim_cfg, int(epochs)

    def lr_at(self, t: float) -> float:
        c = self.cfg
        e = math.floor(t + 1e-9)
        if c.schedule == "cosine":
            return c.lr_min + (c.lr - c.lr_min) * 0.5 * (1.0 + math.cos(math.pi * e / self.epochs))
        if c.schedule == "linear":
            return c.lr * max(0.0, 1.0 - e / self.epochs)
        if c.schedule == "step":
            return c.lr * c.gamma ** sum(1 for m in c.milestones if t + 1e-9 >= m * self.epochs)
        if c.schedule == "exponential":
            return c.lr * c.gamma ** math.floor(t / c.step_epochs + 1e-9)
        raise ValueError(f"optim.schedule: unknown schedule {c.schedule!r}")

    def state_dict(self) -> Dict[str, Any]:
        return {"schedule": self.cfg.schedule, "epochs": self.epochs}
