"""Build and load the project's own C kernels (``csrc/``) with the system C compiler, once.

The shared library is compiled on first use into ``<ternbench cache>/kernels/`` under a name
holding the hash of the source and the flags (a changed source builds anew; the write is
atomic, so concurrent first uses are safe) and loaded with ctypes (whose foreign calls
release the GIL). The kernels parallelize with OpenMP on torch's own thread pool.

Why not a torch C++ extension: compiling against torch's headers takes about a minute on
2 cores; this plain C file compiles in about a second and needs only ``cc``.
Set ``TERNBENCH_NATIVE=0`` to turn the native kernels off (the FBGEMM kernel is used then).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import torch

from quant.fileio import atomic_path, cache_dir

CSRC = Path(__file__).resolve().parent / "csrc"
# -fopenmp links libgomp.so.1: torch's own copy once torch is imported (same soname), so the
# kernels' parallel loops run on torch's intra-op threads instead of competing with them.
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-fPIC", "-shared", "-std=gnu11")

_P, _I, _L, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
# function -> (restype, argtypes); the C prototypes in csrc/ternary_pairs.c (tp_*) and ternary_quads.c (tq_*)
SIGNATURES = {
    "tp_chunks": (_I, [_I]),
    "tp_table_cells": (_L, [_I, _I, _I]),
    "tp_encode": (_L, [_P, _I, _I, _P, _P, _P]),
    "tp_decode": (None, [_P, _P, _P, _I, _I, _P]),
    "tp_quantize_table": (None, [_P, _L, _I, _I, _I, _F, _P, _P, _I]),
    "tp_gemm": (_I, [_P, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _L, _I]),
    "tq_code_bytes": (_L, [_I, _I]),
    "tq_encode": (None, [_P, _I, _I, _P]),
    "tq_decode": (None, [_P, _I, _I, _P]),
    "tq_tail_by_columns": (_I, [_I, _I, _I]),
    "tq_linear": (_I, [_P, _L, _I, _I, _I, _P, _P, _P, _F, _P, _L, _I]),
}

_libs: dict[str, ctypes.CDLL | str] = {}  # source name -> library, or why it is unavailable


def _cpu_reason() -> str | None:
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        return f"the native kernels need an x86 CPU with AVX2 (torch reports {capability})"
    return None


def _build(name: str) -> ctypes.CDLL:
    source = CSRC / f"{name}.c"
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler {compiler!r} on PATH (install gcc, or set CC)")
    headers = b"".join(h.read_bytes() for h in sorted(CSRC.glob("*.h")))  # included by the sources
    digest = hashlib.sha256(source.read_bytes() + headers + " ".join((compiler, *FLAGS)).encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"{name}-{digest}.so"
    if not target.exists():
        with atomic_path(target) as tmp:
            done = subprocess.run([compiler, *FLAGS, "-o", str(tmp), str(source)], capture_output=True, text=True)
            if done.returncode != 0:
                raise OSError(f"compiling {source} failed: {done.stderr.strip()[-800:]}")
    lib = ctypes.CDLL(str(target))
    for fn, (restype, argtypes) in SIGNATURES.items():
        if hasattr(lib, fn):
            getattr(lib, fn).restype, getattr(lib, fn).argtypes = restype, argtypes
    return lib


def load(name: str) -> ctypes.CDLL | str:
    """The library built from ``csrc/<name>.c``, or a string saying why it cannot be had here."""
    if name not in _libs:
        if os.environ.get("TERNBENCH_NATIVE", "1") == "0":
            _libs[name] = "turned off by TERNBENCH_NATIVE=0"
        elif (reason := _cpu_reason()) is not None:
            _libs[name] = reason
        else:
            try:
                _libs[name] = _build(name)
            except OSError as err:
                _libs[name] = str(err)
    return _libs[name]
