"""What the explanation methods of one batch share: one forward pass, its activations and
gradient, baselines, a seed, and chunk sizes that fit the device's memory.

The forward pass that gives the prediction runs once, without autograd up to the CAM
target layer. A forward hook on that layer swaps its output for a leaf tensor and
switches autograd on, so only the rest of the network (pooling and classifier for the
default ``backbone`` layer) keeps a graph. The gradient of the target scores with
respect to the layer's activations is then one backward pass through that small
graph, shared by every CAM method, and the logits and the embedding come from the
same pass.
"""
from __future__ import annotations

import math
import os
import weakref

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from xcyto.errors import ExplainError, ModelError
from xcyto.models import evaluating, get_layer  # noqa: F401  (evaluating: used by explain and evaluation)

#: Environment variable: memory (MiB) that chunked methods may use; overrides the estimate.
MEMORY_ENV = "XCYTO_EXPLAIN_MEMORY_MB"
#: Upper bound on images per chunk: beyond this, larger chunks no longer run faster.
MAX_ROWS = 256
#: CPU default: this share of available memory, at most ``CPU_BUDGET_CAP`` bytes. Larger
#: chunks do not run faster on CPU, they run slower once a layer's activations for the
#: chunk outgrow the processor's cache: a forward+backward pass of EfficientNet-Lite0 on 2
#: cores took 12 ms per image in chunks of 6 and 19 ms in chunks of 9 at 224 px, 2.9 ms in
#: chunks of 24 and 4.2 ms in chunks of 38 at 112 px. 256 MiB gives 4 and 18 images, and
#: ``explain()`` of a Herlev cell 0.87 s at the median against 1.03-1.18 s with 512 MiB.
CPU_BUDGET_SHARE = 0.25
CPU_BUDGET_CAP = 256 << 20
#: GPU default: this share of the free device memory.
GPU_BUDGET_SHARE = 0.5

# model -> {(sample shape, dtype): (sum of module output bytes, largest output bytes)} per sample
_ACTIVATION_BYTES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class Context:
    """Shared state of one batch; methods read it, the runner fills ``options``.

    ``layer``: dotted name of the CAM target layer (``None``: no CAM methods possible).
    ``embedding_layer``: dotted name of the layer whose output is the embedding.
    ``mean``/``std``: the normalisation of ``batch``, to build baselines in pixel terms.
    """

    def __init__(self, model: nn.Module, batch: torch.Tensor, *, layer: str | None = "backbone",
                 embedding_layer: str | None = "pool", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                 seed: int = 0, memory_mb: float | None = None, channels_last: bool = True) -> None:
        self.model = model
        self.batch = batch
        self.layer = layer
        self.embedding_layer = embedding_layer
        self.mean = torch.tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
        self.seed = int(seed)
        self.memory_mb = memory_mb
        self.options: dict = {}
        self.info: dict[str, dict[str, torch.Tensor]] = {}
        self.method: str | None = None
        self._leaf: torch.Tensor | None = None
        self._graph_logits: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.embedding: torch.Tensor | None = None
        self._gradients: dict[bytes, torch.Tensor] = {}
        self.channels_last = channels_last
        self._converted = False

    # -- the one forward pass -------------------------------------------------------
    def forward(self) -> torch.Tensor:
        """Run the shared forward pass (once); returns the logits ``(B, K)``."""
        if self.logits is not None:
            return self.logits
        handles = []
        captured: dict[str, torch.Tensor] = {}
        if self.layer is not None:
            handles.append(_layer(self.model, self.layer).register_forward_hook(self._layer_hook))
        if self.embedding_layer is not None:
            def keep_embedding(module, inputs, output):
                captured["embedding"] = output
            handles.append(_layer(self.model, self.embedding_layer).register_forward_hook(keep_embedding))
        key = (tuple(self.batch.shape[1:]), self.batch.dtype)
        measuring = key not in _ACTIVATION_BYTES.get(self.model, {})
        sizes: list[int] = []
        if measuring:
            handles += _size_hooks(self.model, sizes)
        try:
            with torch.no_grad():
                logits = self.model(self.batch)
        finally:
            for handle in handles:
                handle.remove()
        if measuring and sizes:
            rows = self.batch.shape[0]
            _ACTIVATION_BYTES.setdefault(self.model, {})[key] = (sum(sizes) / rows, max(sizes) / rows)
        if self.layer is not None and self._leaf is None:
            raise ExplainError(f"layer {self.layer!r} was not used in the model's forward pass")
        self._graph_logits = logits if logits.requires_grad else None
        self.logits = logits.detach()
        if "embedding" in captured:
            self.embedding = captured["embedding"].detach().flatten(1)
        return self.logits

    def _layer_hook(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise ExplainError(f"layer {self.layer!r} does not output a single tensor; choose another layer")
        if self._leaf is not None:
            raise ExplainError(f"layer {self.layer!r} is called more than once per forward pass; choose another layer")
        # From here on the forward pass records a graph, so the gradient with respect to
        # this layer's output needs no backward pass through the layers before it.
        # (The enclosing no_grad block restores the mode when the forward pass returns.)
        torch.set_grad_enabled(True)
        self._leaf = output.detach().requires_grad_(True)
        return self._leaf.clone()  # later in-place ops must not touch the leaf

    @property
    def activations(self) -> torch.Tensor:
        """The target layer's output ``(B, C, h, w)`` (no graph)."""
        self.forward()
        if self._leaf is None:
            raise ExplainError(f"method {self.method!r} needs a CAM target layer; the model has none set")
        activations = self._leaf.detach()
        if activations.dim() != 4:
            raise ExplainError(f"layer {self.layer!r} outputs shape {tuple(activations.shape)}; CAM methods need "
                               "a (B, C, h, w) feature map")
        return activations

    def activation_gradient(self, targets: torch.Tensor) -> torch.Tensor:
        """d(target logits)/d(activations) ``(B, C, h, w)``: one backward pass, cached per targets."""
        self.forward()
        key = targets.detach().cpu().numpy().tobytes()
        if key not in self._gradients:
            if self._graph_logits is None:
                raise ExplainError(f"method {self.method!r} needs gradients at layer {self.layer!r}, "
                                   "but the forward pass recorded none")
            score = self._graph_logits.gather(1, targets.view(-1, 1)).sum()
            (gradient,) = torch.autograd.grad(score, self._leaf, retain_graph=True)
            self._gradients[key] = gradient
        return self._gradients[key]

    # -- memory-aware chunks ------------------------------------------------------------
    def rows_per_chunk(self, backward: bool = True, sample_shape=None) -> int:
        """How many images one forward (and backward) pass may hold within the memory budget."""
        self.forward()
        shape = tuple(sample_shape or self.batch.shape[1:])
        total, largest = _ACTIVATION_BYTES.get(self.model, {}).get((shape, self.batch.dtype), (None, None))
        if total is None:  # never measured for this shape: scale from the batch's shape
            known = _ACTIVATION_BYTES.get(self.model, {}).get((tuple(self.batch.shape[1:]), self.batch.dtype))
            scale = math.prod(shape) / math.prod(self.batch.shape[1:])
            total, largest = (known[0] * scale, known[1] * scale) if known else (64 << 20, 16 << 20)
        per_row = 2.0 * total if backward else 3.0 * largest
        budget = memory_budget(self.batch.device, self.memory_mb)
        return int(max(1, min(MAX_ROWS, budget // max(per_row, 1))))

    def many_passes(self) -> None:
        """Called by methods that run many passes (IG, SmoothGrad, Score-CAM, occlusion): on CPU,
        convolutions run faster in channels-last layout, so the model's 4-D weights are switched
        to it until :meth:`restore` (the runner calls it; the values are unchanged)."""
        if self._converted or not self.channels_last or self.batch.device.type != "cpu":
            return
        weights = [p for p in self.model.parameters() if p.dim() == 4]
        if weights and all(p.is_contiguous() for p in weights):
            self.model.to(memory_format=torch.channels_last)
            self._converted = True

    def pass_model(self) -> nn.Module:
        """The model for methods that run many forward+backward passes (IG, SmoothGrad): on CPU
        a cached copy with batch norms folded into the convolutions, channels-last
        (:func:`xcyto.models.pass_model`; same outputs, about a fifth faster)."""
        if not self.channels_last:
            return self.model
        from xcyto.models import pass_model

        return pass_model(self.model, self.batch)

    def restore(self) -> None:
        """Undo :meth:`many_passes`."""
        if self._converted:
            self.model.to(memory_format=torch.contiguous_format)
            self._converted = False

    # -- baselines and randomness ----------------------------------------------------------
    def baseline(self, spec, batch: torch.Tensor | None = None) -> torch.Tensor:
        """A baseline broadcastable to ``batch``: ``"black"``, ``"white"``, ``"mean"`` (the
        normalisation mean, zeros after normalising), ``"blur"`` (Gaussian, sigma = 5 px
        at 224 px), ``"background"`` (each image's median border colour: an empty slide),
        a grey level in ``[0, 1]``, or a tensor."""
        batch = self.batch if batch is None else batch
        if isinstance(spec, torch.Tensor):
            return spec.to(device=batch.device, dtype=batch.dtype)
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return (float(spec) - self.mean) / self.std
        if spec == "black":
            return (0.0 - self.mean) / self.std
        if spec == "white":
            return (1.0 - self.mean) / self.std
        if spec in ("mean", "zero"):
            return torch.zeros_like(self.mean)
        if spec == "blur":
            sigma = max(0.5, 5.0 * batch.shape[-1] / 224)
            kernel = 2 * math.ceil(2 * sigma) + 1
            return TF.gaussian_blur(batch, [kernel, kernel], [sigma, sigma])
        if spec == "background":
            border = torch.cat([batch[..., 0, :], batch[..., -1, :], batch[..., :, 0], batch[..., :, -1]], dim=-1)
            return border.median(dim=-1).values[..., None, None]  # (B, 3, 1, 1)
        raise ExplainError(f"unknown baseline {spec!r}: use 'black', 'white', 'mean', 'blur', 'background', a grey level "
                           "in [0, 1] or a tensor")

    def generator(self) -> torch.Generator:
        """A generator seeded with ``seed``, on the batch's device."""
        return torch.Generator(device=self.batch.device).manual_seed(self.seed)

    def record(self, key: str, values: torch.Tensor) -> None:
        """Store a per-image diagnostic ``(B,)`` for the current method (e.g. IG's completeness gap)."""
        self.info.setdefault(self.method, {})[key] = values.detach()


def _layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return get_layer(model, name)
    except ModelError as error:
        raise ExplainError(f"{error}; give a dotted module name such as 'backbone' or 'backbone.layer3'") from None


def memory_budget(device: torch.device, memory_mb: float | None = None) -> int:
    """Bytes a chunked method may use: ``memory_mb``, else ``$XCYTO_EXPLAIN_MEMORY_MB``, else
    half the free GPU memory, or a quarter of the available RAM (at most 256 MiB) on CPU."""
    if memory_mb is None and os.environ.get(MEMORY_ENV):
        try:
            memory_mb = float(os.environ[MEMORY_ENV])
        except ValueError:
            raise ExplainError(f"${MEMORY_ENV} must be a number of MiB, got {os.environ[MEMORY_ENV]!r}") from None
    if memory_mb is not None:
        if memory_mb <= 0:
            raise ExplainError(f"memory budget must be > 0 MiB, got {memory_mb}")
        return int(memory_mb * (1 << 20))
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_BUDGET_SHARE)
    return int(min(CPU_BUDGET_CAP, _available_ram() * CPU_BUDGET_SHARE))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def _size_hooks(model: nn.Module, sizes: list[int]) -> list:
    """Forward hooks on leaf modules adding each output's bytes to ``sizes``."""
    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor) and not (inputs and output is inputs[0]):  # Identity, eval Dropout
            sizes.append(output.numel() * output.element_size())

    return [module.register_forward_hook(hook) for module in model.modules() if not any(True for _ in module.children())]


