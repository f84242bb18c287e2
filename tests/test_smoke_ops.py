import numpy as np
from oracle import check_single_op


def test_add_broadcast():
    r = np.random.default_rng(0)
    check_single_op("Add", [("a", r.standard_normal((2, 3, 4), dtype=np.float32)),
                            ("b", r.standard_normal((3, 1), dtype=np.float32))])


def test_reshape_shape_input_becomes_attribute():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    check_single_op("Reshape", [("x", x)], consts=[("shape", np.array([0, -1], np.int64))])
