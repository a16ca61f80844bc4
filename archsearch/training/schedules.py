"""Learning-rate schedules (``training.lr_schedule``): one scheduler object per run, stepped after
every optimizer step, on the CPU and on CUDA alike.

Every schedule is a torch scheduler that writes ``group["lr"]`` through the base scheduler's
update, which fills a tensor learning rate in place (torch >= 2.4): a CUDA-graphed step reads
that tensor on every replay, so the eager and the graphed step follow the same schedule. The
per-step kinds (``cosine``, ``constant``, ``exponential``) are a :class:`~torch.optim.lr_scheduler.LambdaLR`
over :func:`lr_factor`; ``onecycle`` is torch's :class:`~torch.optim.lr_scheduler.OneCycleLR`
without momentum cycling (a captured graph keeps AdamW's betas as constants).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from archsearch.training.settings import LRSchedule, TrainConfig

#: OneCycleLR's start (``lr / DIV``) and end (``lr / (DIV * FINAL_DIV)``), torch's defaults.
ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 25.0, 1e4


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor for step ``s`` (from 0): ``(s + 1) / warmup_steps`` during warmup, then a
    cosine from 1 down to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def lr_factor(
    schedule: LRSchedule, warmup_steps: int, steps_per_epoch: int, epochs: int
) -> Callable[[int], float]:
    """The factor of the base rate at step ``s`` (from 0) of a per-step kind (not ``onecycle``):

    - ``cosine``: :func:`warmup_cosine` over ``steps_per_epoch * epochs`` steps;
    - ``constant``: ``min(1, (s + 1) / warmup_steps)``, then 1;
    - ``exponential``: ``gamma ** max(0, k - hold_epochs)`` in epoch ``k = s // steps_per_epoch + 1``,
      times the warmup's ramp during the first ``warmup_steps``.
    """
    if schedule.kind == "cosine":
        return warmup_cosine(warmup_steps, steps_per_epoch * epochs)

    def ramp(step: int) -> float:
        return (step + 1) / warmup_steps if step < warmup_steps else 1.0

    if schedule.kind == "constant":
        return ramp
    if schedule.kind == "exponential":
        gamma, hold = float(schedule.gamma), int(schedule.hold_epochs)

        def factor(step: int) -> float:
            epoch = step // steps_per_epoch + 1
            return ramp(step) * gamma ** max(0, epoch - hold)

        return factor
    raise ValueError(f"lr_schedule kind {schedule.kind!r} has no per-step factor")


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The scheduler of ``cfg.lr_schedule`` for ``steps_per_epoch`` optimizer steps per epoch. Make
    it before a graphed step is captured, so the capture's optimizer steps pass its hook."""
    schedule = cfg.lr_schedule
    if schedule.kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.learning_rate,
            total_steps=steps_per_epoch * cfg.epochs,
            pct_start=float(schedule.pct_start),
            div_factor=ONECYCLE_DIV,
            final_div_factor=ONECYCLE_FINAL_DIV,
            cycle_momentum=False,
        )
    factor = lr_factor(schedule, cfg.warmup_steps, steps_per_epoch, cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_rates(cfg: TrainConfig, steps_per_epoch: int) -> list[tuple[float, float]]:
    """The rate of the first and of the last step of every epoch, from the scheduler
    :func:`train` would use (on a throwaway parameter): what ``docs`` and the tests show."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.learning_rate)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    rates: list[tuple[float, float]] = []
    for _ in range(cfg.epochs):
        first = last = 0.0
        for step in range(steps_per_epoch):
            last = float(optimizer.param_groups[0]["lr"])
            first = last if step == 0 else first
            optimizer.step()
            scheduler.step()
        rates.append((first, last))
    return rates
