"""A machine where the native kernels cannot be built (no C compiler, not x86 with AVX2) runs the
CPU's W1.58A8 on FBGEMM: the kernel, module and model tests pass there too, in a subprocess with
``TERNBENCH_NATIVE=0``."""

import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from quant.kernels.cpu_pairs import PairTableKernel


def test_kernel_and_model_tests_pass_on_fbgemm_alone():
    here = Path(__file__).parent
    env = {**os.environ, "TERNBENCH_NATIVE": "0"}
    files = [str(here / name) for name in ("test_cpu.py", "test_swap.py", "test_modules.py")]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed, skipped = re.search(r"(\d+) passed", proc.stdout), re.search(r"(\d+) skipped", proc.stdout)
    assert passed and int(passed.group(1)) >= 40, proc.stdout[-2000:]
    if PairTableKernel.unavailable_reason(torch.device("cpu"), "int8") is None:
        # here the native kernels exist, so their contract cases are the ones skipped there
        assert skipped and int(skipped.group(1)) >= 15, proc.stdout[-2000:]
