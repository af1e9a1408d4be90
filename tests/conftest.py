import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from .models import pretrained  # noqa: E402

hf_logging.set_verbosity_error()
torch.set_num_threads(1)


@pytest.fixture
def make_model(tmp_path):
    """Factory: `make_model("vit", dtype=torch.bfloat16)` -> a freshly loaded tiny pretrained model."""
    counter = iter(range(1000))

    def factory(arch: str, dtype: torch.dtype = torch.float32):
        directory = tmp_path / f"{arch}-{next(counter)}"
        directory.mkdir()
        return pretrained(arch, directory, dtype)

    return factory
