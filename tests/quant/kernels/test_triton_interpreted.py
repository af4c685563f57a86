"""The Triton kernels' own code, checked without a GPU: ``test_cuda.py``'s Triton tests (the
kernels, and the kernel classes in a whole fused model) run in a subprocess under Triton's
interpreter (``TRITON_INTERPRET=1``, CPU tensors)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU test_cuda.py runs the kernels for real")
def test_triton_kernels_match_references_under_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    test_file = Path(__file__).with_name("test_cuda.py")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file),
                           "-k", "triton"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 30, proc.stdout[-2000:]
