"""Shared fixtures of the correspondence tests: the chairs family and a small held-out set."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The correspondence code's small tensors run much faster on one thread on a shared CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def family():
    from n3f.correspond.families import create_family

    return create_family("chairs")


@pytest.fixture(scope="session")
def small_eval_set(family):
    """Three held-out instances, 60 keypoints each, one 24 x 24 label view each."""
    from n3f.correspond.metrics import make_eval_set

    return make_eval_set(family, n_instances=3, n_keypoints=60, n_views=1, size=24, seed=99)
