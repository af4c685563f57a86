"""quant.kernels: fast ternary inference (W1.58A8 and W1.58A16) on CPU and CUDA.

- ``reference``: slow pure-torch ground truth for every kernel;
- ``base``: the kernel interface and the backend registry (auto by device, fallback);
- ``cpu_quads`` / ``cpu_pairs`` / ``cpu`` / ``cuda``: the device kernels (CPU: the quad-table kernel,
  C in ``csrc/`` built by ``native``, then FBGEMM; the pair-table kernel on request; the two C
  kernels share ``cpu_native.NativeCpuKernel``);
- ``modules``: TernaryLinear, TernaryMultiheadAttention, TernaryPatchEmbed, TernaryEmbedding;
- ``swap``: ``accelerate_(model, backend, activations, fuse)`` (fuse: open_clip blocks' LayerNorms and
  GELUs into the kernels that fold them in: the CUDA ones);
- ``variants``: the ``q-*-a8`` model variants for ``bench.models``;
- ``inventory``: what runs on this machine and a self-check against the reference (``ternbench kernels``,
  in ``bench/cli_kernels.py``).
"""

from quant.kernels.base import KernelUnavailableWarning, select_kernel
from quant.kernels.modules import (
    TernaryEmbedding,
    TernaryLinear,
    TernaryMultiheadAttention,
    TernaryPatchEmbed,
)
from quant.kernels.swap import accelerate_, resident_weight_bytes

__all__ = [
    "KernelUnavailableWarning", "TernaryEmbedding", "TernaryLinear", "TernaryMultiheadAttention",
    "TernaryPatchEmbed", "accelerate_", "resident_weight_bytes", "select_kernel",
]
