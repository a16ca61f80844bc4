"""The things a search is about: an architecture, the fixed shape of the model, and a search space."""

from __future__ import annotations

from typing import Literal

import attrs


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _fraction_or_none(instance: object, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be a fraction in [0, 1) or null, got {value}")


@attrs.frozen(order=True)
class Architecture:
    """One transformer shape and its exact parameter count (for one model variant and spec)."""

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    param_count: int = attrs.field(default=0, eq=False, order=False)

    @property
    def key(self) -> str:
        """A stable, readable identifier: ``d128-L8-h4-ff512``."""
        return f"d{self.d_model}-L{self.n_layers}-h{self.n_heads}-ff{self.d_ff}"

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


HeadKind = Literal["classification", "forecast"]


@attrs.frozen
class ModelSpec:
    """Everything about a model except its architecture: input shape, outputs, variant options.

    ``n_outputs`` is the number of logits for a classification head and the horizon for a forecast
    head. ``n_targets`` is the number of forecast channels (the ``patchtst`` head emits
    ``n_outputs * n_targets`` values; the channel-independent head emits ``n_outputs`` per channel
    and keeps ``target_channels``, by default the first ``n_targets``). ``attention_dropout``
    applies to the attention probabilities; null is the variant's own choice (``patchtst``: the
    ``dropout``; ``patchtst-ci``: 0, as the official implementation).
    """

    num_features: int = attrs.field(default=20, validator=_positive)
    context_length: int = attrs.field(default=60, validator=_positive)
    patch_len: int = attrs.field(default=10, validator=_positive)
    stride: int = attrs.field(default=5, validator=_positive)
    head: HeadKind = "classification"
    n_outputs: int = attrs.field(default=1, validator=_positive)
    n_targets: int = attrs.field(default=1, validator=_positive)
    dropout: float = 0.1
    head_dropout: float = 0.0
    attention_dropout: float | None = attrs.field(default=None, validator=_fraction_or_none)
    # Options of the channel-independent variant (ignored by ``patchtst``).
    revin: bool = True
    revin_affine: bool = True
    norm: Literal["batch", "layer"] = "batch"
    padding_patch: Literal["end", "none"] = "end"
    res_attention: bool = True
    target_channels: tuple[int, ...] = ()

    def __attrs_post_init__(self) -> None:
        if any(not 0 <= c < self.num_features for c in self.target_channels):
            raise ValueError(f"target_channels {self.target_channels} must lie in 0..{self.num_features - 1}")
        if self.patch_len > self.context_length:
            raise ValueError(
                f"patch_len ({self.patch_len}) must not exceed context_length ({self.context_length})"
            )

    @property
    def targets(self) -> tuple[int, ...]:
        return self.target_channels or tuple(range(self.n_targets))

    @property
    def num_patches(self) -> int:
        """Patches cut by ``patchtst``: ``(context_length - patch_len) // stride + 1``."""
        return (self.context_length - self.patch_len) // self.stride + 1


HeadRule = Literal["all", "head-dim-64"]


@attrs.frozen
class ArchSpace:
    """The values an architecture may take.

    ``n_heads`` must divide ``d_model``. With ``head_rule: all`` every such value is a separate
    architecture (heads do not change the parameter count, so each (d_model, n_layers, d_ff) then
    appears once per head count). With ``head_rule: head-dim-64`` each width gets one head count:
    the most heads that keep the head dimension at 64 or more, else the fewest allowed.
    ``d_ff`` is ``ratio * d_model`` for each ratio in ``d_ff_ratios``. ``max_architectures``
    thins a larger band evenly by parameter count, always keeping the extremes.
    """

    d_model: tuple[int, ...]
    n_layers: tuple[int, ...]
    n_heads: tuple[int, ...]
    d_ff_ratios: tuple[int, ...] = (2, 4)
    head_rule: HeadRule = "all"
    max_architectures: int | None = None

    def head_choices(self, d_model: int) -> list[int]:
        """The head counts allowed for ``d_model`` under the space's rule."""
        divisors = [h for h in sorted(self.n_heads) if d_model % h == 0]
        if self.head_rule == "all" or not divisors:
            return divisors
        wide = [h for h in divisors if d_model // h >= 64]
        return [wide[-1]] if wide else [divisors[0]]
