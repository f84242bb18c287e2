import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# every CPU kernel the tests build is proven to access only its buffers (targets/cpu/bounds_check.py)
os.environ.setdefault("AOTC_CHECK_BOUNDS", "1")


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Models exported by tests, shared by every test in the run (exports take seconds each)."""
    d = ROOT / ".cache" / "test-models"
    d.mkdir(parents=True, exist_ok=True)
    return d
