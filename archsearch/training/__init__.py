"""Training one trial: its settings, the loop, the optimizer step (eager or a CUDA graph) and the
memory one trial needs on a device."""

from archsearch._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["EpochResult", "TrainConfig", "TrainResult"], "archsearch.training.settings"),
    **dict.fromkeys(["evaluate", "seed_everything", "train"], "archsearch.training.trainer"),
    **dict.fromkeys(["estimate_trial_memory", "trial_memory_breakdown"], "archsearch.training.memory"),
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
