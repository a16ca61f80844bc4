"""How much device memory one trial takes, and what a CUDA device has.

:func:`estimate_trial_memory` says what one trial needs (closed forms, from the model variant's
:class:`~archsearch.registry.ActivationShape`), :func:`free_memory` what a device has; worker
planning (:mod:`archsearch.search.workers`) puts as many trials on a device as fit.

Everything that touches CUDA goes through ``torch.cuda`` functions looked up at call time (torch
is imported there, not with this module), so tests on a machine without a GPU monkeypatch them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from archsearch.architecture import Architecture, ModelSpec
from archsearch.plugin.registry import ActivationShape, ModelVariant
from archsearch.training.settings import BEST_ON_HOST_BYTES

if TYPE_CHECKING:
    import torch

GiB = 1 << 30
MiB = 1 << 20
#: Per process on a CUDA device, outside the tensors: the CUDA context (about 300-500 MB on an
#: H100 with the torch kernels loaded) and caching-allocator slack.
#: ``torch.cuda.max_memory_allocated`` does not see the context; ``nvidia-smi`` does.
CUDA_CONTEXT_BYTES = 500 * MiB
#: A cuBLAS workspace, which torch takes from its caching allocator (so it counts in
#: ``max_memory_allocated``): 32 MiB per stream on Hopper (4 MiB before). A trial uses the
#: default stream, and with CUDA graphs also the trainer's one side stream (warm-up and capture).
CUBLAS_WORKSPACE_BYTES = 32 * MiB
#: Bytes per element of the AdamW state: ``exp_avg`` and ``exp_avg_sq``, both fp32.
ADAMW_STATE_BYTES = 8


@attrs.frozen
class MemoryEstimate:
    """The parts of :func:`estimate_trial_memory`, in bytes (see there for the formula)."""

    param_count: int
    params: int
    gradients: int
    optimizer: int
    amp_weights: int
    best_weights: int
    activations: int
    backward_transient: int
    eval_activations: int
    data: int
    library_workspace: int
    context: int
    graphs: bool = True

    @property
    def states(self) -> int:
        """Weights, gradients, AdamW state and the bf16 weight copies: there all the time."""
        return self.params + self.gradients + self.optimizer + self.amp_weights

    @property
    def total(self) -> int:
        train = self.activations + self.backward_transient
        # A CUDA graph keeps its activations in a private pool that evaluation cannot reuse.
        working = train + self.eval_activations if self.graphs else max(train, self.eval_activations)
        return self.states + self.best_weights + working + self.data + self.library_workspace + self.context

    def as_dict(self) -> dict[str, int]:
        return {**attrs.asdict(self), "states": self.states, "total": self.total}


def joint_patches_shape(
    arch: Architecture, spec: ModelSpec, batch: int, element_bytes: int
) -> ActivationShape:
    """A model that cuts patches across all features jointly (the ``patchtst`` variant, and the
    plan for a variant that describes no shape): ``batch`` sequences of ``num_patches`` tokens;
    saved outside the layers: the fp32 input, the patches (fp32 and ``element_bytes``), the final
    norm's fp32 input and the head's input."""
    n, d = spec.num_patches, arch.d_model
    patch_in = spec.patch_len * spec.num_features
    edges = batch * spec.context_length * spec.num_features * 4 + batch * n * patch_in * (4 + element_bytes)
    edges += batch * n * (4 * d + element_bytes * d)
    return ActivationShape(batch, n, False, edges)


def variant_of(variant: str | ModelVariant) -> ModelVariant:
    """A variant given by name (looked up among the registered plugins) or as itself."""
    if isinstance(variant, ModelVariant):
        return variant
    from archsearch.plugin.manager import get_plugins

    plugins = get_plugins()
    names = plugins.names("estimator")
    if variant not in names:
        raise ValueError(f"variant must be one of {', '.join(names)}, got {variant!r}")
    return plugins.variant(variant)


def activation_shape(
    variant: str | ModelVariant, arch: Architecture, spec: ModelSpec, batch: int, element_bytes: int = 2
) -> ActivationShape:
    """The variant's :class:`ActivationShape` for ``batch`` (its own, else :func:`joint_patches_shape`)."""
    shape = variant_of(variant).activation_shape or joint_patches_shape
    return shape(arch, spec, batch, element_bytes)


def trial_memory_breakdown(
    arch: Architecture,
    spec: ModelSpec,
    batch_size: int,
    micro_batch_size: int | None = None,
    amp: bool = True,
    variant: str | ModelVariant = "patchtst",
    eval_batch_size: int | None = None,
    data_bytes: int = 0,
    include_context: bool = True,
    graphs: bool = True,
) -> MemoryEstimate:
    """The parts of :func:`estimate_trial_memory`; its keyword options are these arguments."""
    if batch_size < 1 or (micro_batch_size is not None and micro_batch_size < 1):
        raise ValueError(f"batch sizes must be positive, got {batch_size} and {micro_batch_size}")
    model = variant_of(variant)
    P = arch.param_count or model.estimate(arch, spec)
    e = 2 if amp else 4  # bytes of a matmul output (bf16 under autocast)
    b = min(micro_batch_size or batch_size, batch_size)
    shape = activation_shape(model, arch, spec, b, e)
    layer = _layer_bytes(arch, shape, e, mask=1 if spec.dropout > 0 else 0)
    # Evaluation (no grad, default batch max(batch, 1024) like the trainer).
    eval_shape = activation_shape(model, arch, spec, eval_batch_size or max(batch_size, 1024), e)
    return MemoryEstimate(
        param_count=P,
        params=4 * P,
        gradients=4 * P,
        optimizer=ADAMW_STATE_BYTES * P,
        amp_weights=2 * P if amp else 0,
        best_weights=4 * P if 4 * P <= BEST_ON_HOST_BYTES else 0,
        activations=arch.n_layers * layer + shape.edge_bytes,
        # Backward holds the gradients of about one layer's activations besides the saved ones.
        backward_transient=layer,
        eval_activations=_eval_bytes(arch, eval_shape.sequences, shape.tokens, e),
        data=data_bytes,
        library_workspace=(2 if graphs else 1) * CUBLAS_WORKSPACE_BYTES,
        context=CUDA_CONTEXT_BYTES if include_context else 0,
        graphs=graphs,
    )


def _layer_bytes(arch: Architecture, shape: ActivationShape, e: int, mask: int) -> int:
    """Saved for backward by one encoder layer (``mask``: 1 when dropout keeps byte masks)."""
    d, ff, h, n = arch.d_model, arch.d_ff, arch.n_heads, shape.tokens
    # Per token: two fp32 residual-stream inputs of the norms (8d); the inputs of the QKV, output
    # and first feed-forward linears, the QKV output (3d), the attention output (d) and two d_ff
    # tensors (GELU input, second linear input) at e bytes; three dropout masks (d, d_ff, d).
    per_token = 8 * d + e * (7 * d + 2 * ff) + mask * (2 * d + ff)
    # Per sequence: fused attention keeps only the log-sum-exp, counted as a full fp32 score
    # matrix to stay on the safe side; residual attention keeps the fp32 softmax, its bf16 copy
    # and the dropout mask.
    per_seq = h * n * n * ((4 + e + mask) if shape.residual_attention else 4)
    return shape.sequences * n * per_token + shape.sequences * per_seq


def _eval_bytes(arch: Architecture, sequences: int, tokens: int, e: int) -> int:
    """Evaluation without gradients: one layer's tensors live at a time: the fp32 residual, norm
    output and a copy (12d), QKV, attention and output (4d) and two d_ff tensors at e bytes;
    attention scores in fp32."""
    d, ff, h, n = arch.d_model, arch.d_ff, arch.n_heads, tokens
    return sequences * n * (12 * d + e * (4 * d + 2 * ff)) + sequences * h * n * n * 4


def estimate_trial_memory(
    arch: Architecture,
    spec: ModelSpec,
    batch_size: int,
    micro_batch_size: int | None = None,
    **options: Any,
) -> int:
    """Peak device bytes of one trial of :func:`archsearch.training.trainer.train` (an upper-side estimate).

    With ``P`` parameters (exact, from the variant's estimator), ``d`` = d_model, ``f`` = d_ff,
    ``h`` heads, ``L`` layers, ``e`` = 2 bytes under bf16 autocast (``amp``) else 4, ``m`` = 1 when
    dropout > 0 else 0, ``b`` = the micro-batch (or batch), ``S`` sequences = ``b`` (``patchtst``) or
    ``b * num_features`` (``patchtst-ci``: every channel is a sequence) and ``N`` tokens each
    (num_patches; one more with end padding)::

        states      = 4P weights + 4P gradients + 8P AdamW (exp_avg, exp_avg_sq; fp32)
                      + 2P bf16 weight copies (amp only)
        layer       = S*N * (8d + e*(7d + 2f) + m*(2d + f))     saved for backward per layer
                      + S * h*N^2 * (4, or 4 + e + m with residual attention)
        activations = L * layer + inputs, patches and head input
        transient   = layer                                   (activation gradients in backward)
        eval        = S_eval*N * (12d + e*(4d + 2f)) + S_eval*h*N^2*4   (no grad, one layer live)
        working     = activations + transient + eval    with CUDA graphs (``graphs``, the
                      trainer's default on CUDA: the graph's pool keeps the training activations)
                    = max(activations + transient, eval) without
        best        = 4P, the best epoch's weights (kept on the device up to 1 GiB; before
                      training the same room holds the capture's snapshot of the weights)
        total       = states + best + working + data_bytes
                      + cuBLAS workspaces (32 MiB per stream: 2 streams with graphs, else 1)
                      + CUDA_CONTEXT_BYTES (500 MiB, per process; include_context=False drops it)

    Gradients are counted although the eager step frees them between steps: a CUDA-graphed step
    keeps them. ``micro_batch_size`` shrinks the activations, not the states. The context term is
    what ``torch.cuda.max_memory_allocated`` does not show, nor does it show the graph pool's
    freed blocks: compare it with ``include_context=False, graphs=False``. The keyword
    ``options`` (``amp``, ``variant``, ``eval_batch_size``, ``data_bytes``, ``include_context``,
    ``graphs``) are :func:`trial_memory_breakdown`'s.
    """
    return trial_memory_breakdown(arch, spec, batch_size, micro_batch_size, **options).total


def measured_peak_memory(device: torch.device | str) -> int | None:
    """``torch.cuda.max_memory_allocated`` of a CUDA device; None for any other device."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated(device))


def visible_devices() -> list[int]:
    """The CUDA device indices this process sees (``0..device_count-1``; torch applies
    ``CUDA_VISIBLE_DEVICES``, so index 0 is the first device listed there). Empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    return list(range(torch.cuda.device_count()))


def free_memory(device_id: int) -> int:
    """Free bytes on CUDA device ``device_id`` (``torch.cuda.mem_get_info``; other processes'
    allocations count as used)."""
    import torch

    free, _total = torch.cuda.mem_get_info(device_id)
    return int(free)
