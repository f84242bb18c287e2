"""`aotc compile` end to end for a Python model with data-dependent control flow:
the frontend, the pass flags (--print-ir-after, --print-pass-times, --verify,
--disable-pass) and the x86 bundle, checked against eager PyTorch on inputs
taking each branch."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

MODEL = textwrap.dedent('''
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            if x.sum() > 0:
                return torch.relu(self.fc(x)) * 2
            else:
                return x[:, :4] + 1

    def make():
        return Net().eval()
''')


def aotc(*args, cwd):
    return subprocess.run([sys.executable, "-m", "aotc.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_compile_python_model_with_pass_flags(tmp_path):
    (tmp_path / "net.py").write_text(MODEL)
    res = aotc("compile", "net.py:make", "-e", "x=2x8", "-o", "bundle", "--quiet", "--verify",
               "--print-pass-times", "--print-ir-after", "fuse_matmul_epilogue", "--disable-pass", "fuse_gelu",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "// ----- IR after fuse_matmul_epilogue" in res.stderr and "FusedMatMul(" in res.stderr
    assert "fuse_gelu" not in res.stderr.split("pass ", 1)[-1]  # disabled: not in the timing table
    sys.path.insert(0, str(tmp_path))
    try:
        import net
        model = net.make()
    finally:
        sys.path.remove(str(tmp_path))
    from aotc import runtime_stub
    bundle = runtime_stub.load(tmp_path / "bundle")
    for sign in (1.0, -1.0):  # one input per branch
        x = (sign * np.abs(np.random.default_rng(1).standard_normal((2, 8)))).astype(np.float32)
        got = bundle.run({"x": x})
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-5, atol=1e-5)


def test_example_input_is_refused_for_onnx_models(tmp_path):
    import onnx
    from oracle import single_op_model
    onnx.save(single_op_model("Relu", [("x", np.zeros((2, 3), np.float32))]), tmp_path / "m.onnx")
    res = aotc("compile", "m.onnx", "-e", "x=2x3", "-o", "out", cwd=tmp_path)
    assert res.returncode == 2 and "--input-shape" in res.stderr and not (tmp_path / "out").exists()
