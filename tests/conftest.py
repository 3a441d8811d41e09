"""Test-wide settings. Runs before any test module imports torch or triton."""

import os

# Triton kernels run in the interpreter on CPU-only machines (CI has no GPU). This must be set
# before triton is first imported, which is why it lives at the very top of the root conftest.
if os.environ.get("FASTSSL_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Keep 2-core CI machines responsive when tests spawn worker processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
