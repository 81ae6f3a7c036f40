import os
import sys

import pytest
import torch

_HERE = os.path.dirname(__file__)
# shared test helpers (harness, references, kernel_cases, train_cases) import by plain name under --import-mode=importlib
sys.path[:0] = [_HERE, *(os.path.join(_HERE, d) for d in ("kernels", "train", "attention"))]
if not torch.cuda.is_available():  # run the Triton kernels under the CPU interpreter (set before triton imports)
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import hf_attn  # noqa: E402,F401  (registers the variants)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A Hub-compatible server on 127.0.0.1 (tests/hub_server.py); in-process clients upload over LFS."""
    from huggingface_hub import constants

    from hub_server import HubServer

    xet = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = True  # the test server speaks LFS, not Xet
    with HubServer(tmp_path_factory.mktemp("hub"), token="hf_test_write_token") as server:
        yield server
    constants.HF_HUB_DISABLE_XET = xet
