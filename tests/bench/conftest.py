"""Fixtures shared by the bench tests: one torch thread, and a tiny generated mini suite."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    # The test machine is shared: one thread avoids oversubscription (the numbers do not depend on it).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def mini_root(request, tmp_path_factory):
    """The mini suite's shapes, colors and captions at the sizes in the test module's ``SIZES``.

    digits is left out: it needs scikit-learn, whose import alone takes seconds.
    """
    from bench.datasets.mini import MiniSizes, prepare_mini

    return prepare_mini(tmp_path_factory.mktemp("mini"), sizes=MiniSizes(**request.module.SIZES),
                        names=["shapes", "colors", "captions"])
