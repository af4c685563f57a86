"""Build and load the project's own C kernels (``csrc/``) with the system C compiler, once.

The shared library is compiled on first use into ``<ternbench cache>/kernels/`` under a name
holding the hash of the source and the flags (a changed source builds anew; the write is
atomic, so concurrent first uses are safe) and loaded with ctypes (whose foreign calls
release the GIL). The kernels parallelize with OpenMP on torch's own thread pool.

Why not a torch C++ extension: compiling against torch's headers takes about a minute on
2 cores; this plain C file compiles in about a second and needs only ``cc``.
Set ``TERNBENCH_NATIVE=0`` to turn the native kernels off (the FBGEMM kernel is used then).

Two forms of a source: ``avx2`` (built with ``-mavx2 -mfma``, where torch reports an AVX2 or
AVX512 CPU) and ``portable`` (no instruction-set flags: SSE2 on x86, NEON on ARM), which a source
written for both (``ternary_quads``) gets everywhere else. The pair-table kernel is AVX2 only.
A compiler without OpenMP (Apple's clang) builds a one-thread library, which is then kept (delete
``<ternbench cache>/kernels/`` after installing OpenMP to build the threaded one).
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
# -ffp-contract=off: the epilogue's roundings stay those of FBGEMM (no fused multiply-add).
FLAGS = ("-O3", "-ffp-contract=off", "-fPIC", "-shared", "-std=gnu11")
# -fopenmp links libgomp.so.1: torch's own copy once torch is imported (same soname), so the
# kernels' parallel loops run on torch's intra-op threads instead of competing with them.
OPENMP = ("-fopenmp",)
FORM_FLAGS = {"avx2": ("-mavx2", "-mfma"), "portable": ()}
PORTABLE_SOURCES = {"ternary_quads"}  # written for both forms; the others in AVX2 intrinsics only
AVX2_CAPABILITIES = ("AVX2", "AVX512")  # torch.backends.cpu.get_cpu_capability() of a CPU with AVX2

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
    "tq_quantize": (None, [_P, _L, _I, _I, _F, _P, _P, _I]),
}

# (source name, "portable" | "auto") -> library, or why it is unavailable
_libs: dict[tuple[str, str], ctypes.CDLL | str] = {}
# the same keys -> what was built: form, threads, library path (for `ternbench kernels`)
_built: dict[tuple[str, str], dict[str, str]] = {}


def _form(name: str, portable: bool) -> str:
    """The form of ``name`` this CPU runs (raises OSError where it has none)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if not portable and capability in AVX2_CAPABILITIES:
        return "avx2"
    if name in PORTABLE_SOURCES:
        return "portable"
    raise OSError(f"{name} needs an x86 CPU with AVX2 (torch reports {capability})")


def _library_path(compiler: str, flags: tuple[str, ...], source: Path, name: str) -> Path:
    headers = b"".join(h.read_bytes() for h in sorted(CSRC.glob("*.h")))  # included by the sources
    digest = hashlib.sha256(source.read_bytes() + headers + " ".join((compiler, *flags)).encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"{name}-{digest}.so"


def _compile(compiler: str, flags: tuple[str, ...], source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        done = subprocess.run([compiler, *flags, "-o", str(tmp), str(source), "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"compiling {source} failed: {done.stderr.strip()[-800:]}")


def _build(name: str, form: str) -> tuple[ctypes.CDLL, dict[str, str]]:
    source = CSRC / f"{name}.c"
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler {compiler!r} on PATH (install gcc, or set CC)")
    flags = (*FLAGS, *FORM_FLAGS[form])
    # With OpenMP, else one thread (a compiler without OpenMP: Apple's clang). A one-thread library
    # on disk means the OpenMP build failed before: it is not tried again at every start.
    builds = [(f, _library_path(compiler, f, source, name)) for f in ((*flags, *OPENMP), flags)]
    target = next((path for _, path in builds if path.exists()), None)
    errors: list[OSError] = []
    for build_flags, path in builds if target is None else ():
        try:
            _compile(compiler, build_flags, source, path)
            target = path
            break
        except OSError as err:
            errors.append(err)
    if target is None:
        raise errors[0]
    lib = ctypes.CDLL(str(target))
    for fn, (restype, argtypes) in SIGNATURES.items():
        if hasattr(lib, fn):
            getattr(lib, fn).restype, getattr(lib, fn).argtypes = restype, argtypes
    threads = "OpenMP" if target == builds[0][1] else "one thread (the compiler has no OpenMP)"
    return lib, {"form": form, "threads": threads, "library": str(target), "compiler": compiler}


def _key(name: str, portable: bool) -> tuple[str, str]:
    return name, "portable" if portable else "auto"


def load(name: str, portable: bool = False) -> ctypes.CDLL | str:
    """The library built from ``csrc/<name>.c`` in this CPU's form (``portable``: the portable form
    even on an AVX2 CPU), or a string saying why it cannot be had here."""
    key = _key(name, portable)
    if key not in _libs:
        if os.environ.get("TERNBENCH_NATIVE", "1") == "0":
            _libs[key] = "turned off by TERNBENCH_NATIVE=0"
        else:
            try:
                _libs[key], _built[key] = _build(name, _form(name, portable))
            except OSError as err:
                _libs[key] = str(err)
    return _libs[key]


def describe(name: str, portable: bool = False) -> dict[str, str]:
    """What ``load(name, portable)`` gives here (building it if needed): ``form``, ``threads``,
    ``library``, ``compiler``, or ``unavailable`` with the reason."""
    lib = load(name, portable)
    if isinstance(lib, str):
        return {"unavailable": lib}
    return dict(_built.get(_key(name, portable), {}))
