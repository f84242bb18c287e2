"""Every model of the zoo (bench/zoo_models.py: architectures nobody tuned aotc for) compiled for
x86-avx512 agrees with onnxruntime on the same ONNX file: the largest difference at most 1e-4 of the
output's largest magnitude. The models and their inputs come from bench/zoo_models.py, the bundles from
bench/zoo.py's builder (cached under .cache/zoo-bundles by the model file and the compiler's sources), so
the speed table and this test always speak of the same graphs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from x86_helpers import needs_avx512

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from zoo_models import ZOO, ZooModelUnavailable, feeds_for, onnx_path  # noqa: E402

MAX_REL_ERR = 1e-4


@pytest.mark.slow
@needs_avx512
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_matches_onnxruntime(name):
    from aotc import runtime_stub
    from timing import ort_session
    from zoo import bundle_for, relative_error
    try:
        path = onnx_path(name)
    except ZooModelUnavailable as e:
        pytest.skip(f"{name}: {e}")
    feeds = feeds_for(name, path)
    bundle, _ = bundle_for(name, log=lambda s: None)
    got = runtime_stub.load(bundle).run(feeds)
    sess = ort_session(path, 2)
    names = [o.name for o in sess.get_outputs()]
    for out_name, want in zip(names, sess.run(names, feeds)):
        g = got[out_name]
        assert g.shape == want.shape and g.dtype == want.dtype, (out_name, g.shape, want.shape)
        assert np.isfinite(g).all()
        err = relative_error(g, want)
        assert err <= MAX_REL_ERR, f"{name} {out_name}: relative error {err:.3g} against onnxruntime"
