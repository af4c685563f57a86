"""The quad-table kernel's C source checked on its own (csrc/quads_check.c against a plain C
reference), in builds Python cannot load here: its portable form cross-compiled for 64-bit ARM
(NEON) and run under qemu, and this machine's forms with and without OpenMP. The ARM build needs
Debian's gcc-aarch64-linux-gnu and qemu-user (.ci/run installs them; skipped without)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from quant.kernels import native

CHECK = Path(__file__).resolve().parent / "csrc" / "quads_check.c"
ARM_ROOT = "/usr/aarch64-linux-gnu"
AVX2 = torch.backends.cpu.get_cpu_capability() in native.AVX2_CAPABILITIES
BUILDS = {  # name -> (compiler, form flags, runner prefix, why it cannot run here or None)
    "avx2": ("cc", (*native.FORM_FLAGS["avx2"], *native.OPENMP), (), None if AVX2 else "not an AVX2 CPU"),
    "portable": ("cc", native.OPENMP, (), None),
    "portable-no-openmp": ("cc", (), (), None),
    "aarch64-neon": ("aarch64-linux-gnu-gcc", native.OPENMP, ("qemu-aarch64", "-L", ARM_ROOT),
                     None if shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")
                     else "no aarch64-linux-gnu-gcc / qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu qemu-user)"),
}


@pytest.mark.parametrize("build", list(BUILDS))
def test_the_c_source_is_bit_equal_to_a_plain_reference(build, tmp_path):
    compiler, flags, runner, why_not = BUILDS[build]
    if why_not or shutil.which(compiler) is None:
        pytest.skip(why_not or f"no {compiler}")
    exe = tmp_path / "quads_check"
    common = [f for f in native.FLAGS if f not in ("-fPIC", "-shared")]  # an executable, not a library
    built = subprocess.run([compiler, *common, *flags, f"-I{native.CSRC}", "-o", str(exe), str(CHECK), "-lm"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    ran = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "bit-equal" in ran.stdout, ran.stdout + ran.stderr
