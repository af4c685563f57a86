"""The CUDA Triton kernels compiled ahead of time for a GPU architecture, on any machine.

Triton's interpreter checks what the kernels compute, not that they compile for a GPU, nor how.
This compiles exactly the launches ``quant.kernels.cuda`` makes (its own launch builders, on meta
tensors of CLIP's layer shapes, specialized as Triton's launcher specializes real arguments) for
an architecture such as sm_90, with the ptxas that ships in Triton's wheel, and reads back what
decides their speed: registers a thread, local memory (register spills), whether the main loop is
pipelined (asynchronous global-to-shared copies), whether its K loop writes tiles of its own to
shared memory, and which tensor-core instructions it uses (``wgmma`` on Hopper, ``mma`` before). No GPU and no CUDA driver are needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from quant.kernels import cuda

# Transformer towers of the CLIP models the benchmarks time: (name, width, tokens), MLP 4x wide.
TOWERS = (
    ("ViT-B-32 image", 768, 50),
    ("ViT-B-16 image", 768, 197),
    ("ViT-L-14 image", 1024, 257),
    ("ViT-B text", 512, 77),
    ("ViT-L-14 text", 768, 77),
)
BATCHES = (1, 32)


@dataclass(frozen=True)
class CompiledLaunch:
    """What ptxas made of one launch configuration."""

    kernel: str  # the Triton function
    config: str  # its constexprs and launch options
    used_by: str  # the first layer (tower, batch, layer) that launches it
    arch: int
    registers: int  # a thread's
    local_bytes: int  # a thread's stack frame: register spills (0: none)
    pipelined: bool  # the K loop's loads are asynchronous global-to-shared copies
    loop_shared_writes: int  # tiles the K loop's own code writes to shared memory (0: MMA fed by the copies)
    tensor_cores: str  # "tcgen05", "wgmma", "mma" or "none"

    def as_dict(self) -> dict:
        return asdict(self)


# PTX instruction -> the report's name for it: Blackwell (sm_100), Hopper, Ampere and later
TENSOR_CORE_OPS = (("tcgen05", "tcgen05.mma"), ("wgmma", "wgmma"), ("mma", "mma.sync"))


def _tool(name: str) -> str | None:
    """A CUDA binary Triton ships (ptxas, cuobjdump), or one on PATH."""
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.isfile(path) else shutil.which(name)


def unavailable_reason() -> str | None:
    """Why kernels cannot be compiled ahead of time here (None: they can)."""
    if not cuda.HAVE_TRITON:
        return "Triton is not installed"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "TRITON_INTERPRET=1 replaces the kernels by the interpreter's; unset it"
    try:  # the launcher's own specialization function (Triton 3.8 has it; older releases may not)
        from triton.runtime.jit import native_specialize_impl  # noqa: F401
    except ImportError:
        import triton

        return f"Triton {triton.__version__} lacks triton.runtime.jit.native_specialize_impl (3.8 has it)"
    for tool in ("ptxas", "cuobjdump"):
        if _tool(tool) is None:
            return f"{tool} not found (Triton's wheel ships it in triton/backends/nvidia/bin)"
    return None


def _specialize(launch: cuda.Launch, backend) -> tuple[dict, dict, dict, dict]:
    """Signature, constexprs, attributes and options of ``launch``, as Triton's launcher derives
    them from real arguments (pointer and integer divisibility by 16, an integer 1 as a constant)."""
    from triton.runtime.jit import native_specialize_impl

    fn = launch.kernel
    values = dict(zip(fn.arg_names, launch.args))
    values.update({k: v for k, v in launch.meta.items() if k in fn.arg_names})
    options = {k: v for k, v in launch.meta.items() if k not in fn.arg_names}
    signature, constexprs, attrs = {}, {}, {}
    for i, param in enumerate(fn.params):
        value = values[param.name]
        if param.is_constexpr:
            signature[param.name], constexprs[(i,)] = "constexpr", value
            continue
        ty, key = native_specialize_impl(backend, value, False, True, True)
        signature[param.name] = ty
        if ty == "constexpr":
            constexprs[(i,)] = value
        elif isinstance(key, str):
            attrs[(i,)] = backend.parse_attr(key)
    return signature, constexprs, attrs, options


def compile_launch(launch: cuda.Launch, arch: int = 90, used_by: str = "") -> CompiledLaunch:
    """Compile ``launch`` for ``sm_<arch>`` and read back its resources (see module docstring)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    target = GPUTarget("cuda", arch, 32)
    signature, constexprs, attrs, options = _specialize(launch, make_backend(target))
    compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs), target=target, options=options)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", cubin], capture_output=True,
                               text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    if found is None:
        raise RuntimeError(f"cuobjdump printed no resource usage for {launch.kernel.__name__}:\n{usage}")
    ptx, ttgir = compiled.asm["ptx"], compiled.asm["ttgir"]
    loop = ttgir[ttgir.find("scf.for"):]  # the K loop's body (kernels without one: empty)
    loop = loop[:loop.find("scf.yield")] if "scf.for" in ttgir else ""
    config = " ".join(f"{k}={v}" for k, v in launch.meta.items())
    return CompiledLaunch(
        kernel=launch.kernel.__name__, config=config, used_by=used_by, arch=arch,
        registers=int(found.group(1)), local_bytes=int(found.group(2)),
        pipelined="async_copy_global_to_local" in ttgir or "async_tma" in ttgir,
        loop_shared_writes=loop.count("ttg.local_alloc"),
        tensor_cores=next((name for name, op in TENSOR_CORE_OPS if op in ptx), "none"))


def _meta(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="meta")


def layer_launches(m: int, k: int, n: int, norm: bool, activation: str | None,
                   dtype: torch.dtype = torch.float16, arch: int = 90) -> Iterator[tuple[str, cuda.Launch]]:
    """Every launch a ternary linear layer (M tokens, K in, N out) makes with the ``cuda`` and
    ``packed`` backends in ``dtype``: the (LayerNorm +) quantization, the int8 GEMM, and the
    2-bit GEMM for int8 and for half activations, with the tiles chosen for ``sm_<arch>``;
    ``norm`` / ``activation``: what a fused block folds into it."""
    x, q, s = _meta(m, k, dtype=dtype), _meta(m, k, dtype=torch.int8), _meta(m, dtype=torch.float32)
    ln = nn.LayerNorm(k, device="meta", dtype=dtype) if norm else None
    w_scale, bias = _meta(n, dtype=torch.float32), _meta(n, dtype=dtype)
    out = _meta(m, n, dtype=dtype)
    yield "quantize", cuda.quantize_launch(x, q, s, ln)
    yield "int8 GEMM", cuda.int8_matmul_launch(q, s, _meta(n, k, dtype=torch.int8), w_scale, bias, out,
                                                activation=activation, arch=arch)
    packed = _meta(n, k // 4, dtype=torch.uint8)
    yield "2-bit GEMM, int8", cuda.ternary2bit_matmul_launch(q, s, packed, w_scale, bias, out,
                                                            activation=activation, arch=arch)
    yield "2-bit GEMM, fp16", cuda.ternary2bit_matmul_launch(x, None, packed, w_scale, bias, out,
                                                            activation=activation, arch=arch)


def clip_launches(towers=TOWERS, batches=BATCHES, arch: int = 90) -> Iterator[tuple[str, cuda.Launch]]:
    """The launches of fused ternary CLIP blocks (``accelerate_``'s default) at ``towers`` x ``batches``
    on ``sm_<arch>``."""
    for tower, width, tokens in towers:
        for batch in batches:
            m = batch * tokens
            for layer, k, n, norm, act in (("attn.in_proj", width, 3 * width, True, None),
                                           ("attn.out_proj", width, width, False, None),
                                           ("mlp.c_fc", width, 4 * width, True, "gelu"),
                                           ("mlp.c_proj", 4 * width, width, False, None)):
                for what, launch in layer_launches(m, k, n, norm, act, arch=arch):
                    yield f"{tower} b{batch} {layer} ({what})", launch


def compile_report(arch: int = 90, launches=None, progress=None) -> list[CompiledLaunch]:
    """Each distinct configuration among ``launches`` (default: ``clip_launches(arch=arch)``) compiled for
    ``sm_<arch>``, in order of first use. ``progress``: called with each result."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", arch, 32))
    seen, rows = set(), []
    for used_by, launch in launches if launches is not None else clip_launches(arch=arch):
        signature, constexprs, attrs, options = _specialize(launch, backend)
        key = (launch.kernel.__name__, repr(signature), repr(constexprs), repr(attrs), repr(options))
        if key in seen:
            continue
        seen.add(key)
        rows.append(compile_launch(launch, arch, used_by))
        if progress is not None:
            progress(rows[-1])
    return rows
