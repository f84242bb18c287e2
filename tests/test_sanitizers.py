"""A shorter `make sanitize` in the suite (about 30 s): the runtime under ASan/UBSan/LSan against the
manifest-tamper matrix and 200 byte mutations (and a bucketed bundle with 40), and the driver's thread pool under
TSan (plain and bucketed)."""
import subprocess
import sys
from pathlib import Path

import pytest

from x86_helpers import needs_avx512

ROOT = Path(__file__).resolve().parent.parent


def _sanitizers_link() -> bool:
    probe = subprocess.run(["cc", "-fsanitize=address,undefined", "-x", "c", "-o", "/dev/null", "-"],
                           input="int main(void){return 0;}", capture_output=True, text=True)
    return probe.returncode == 0


@needs_avx512
@pytest.mark.skipif(not _sanitizers_link(), reason="the C compiler has no ASan/UBSan runtime (libasan, libubsan)")
def test_runtime_under_sanitizers():
    proc = subprocess.run([sys.executable, str(ROOT / "tests/sanitize/run_sanitizers.py"), "--mutations", "200",
                           "--thread-runs", "50"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "sanitize: ok" in proc.stdout
