"""A model whose forward pass branches on its input's values, traced and compiled by aotc.

`EarlyExitClassifier` normalizes loud inputs, runs a cheap classifier, and returns its
answer early when it is confident; otherwise it refines the features with a bounded
iterative loop and runs a deeper head. Every one of those decisions depends on the
input's values, so `torch.jit.trace` bakes in whichever path the example took, and
`torch.export` refuses the branches. aotc's frontend converts them to torch.where.

    python examples/control_flow/model.py            # trace, optimize, check, write ONNX
    aotc trace examples/control_flow/model.py:make_model --example-input x=2x16 -o /tmp/cf.onnx --optimize
"""
from __future__ import annotations

import torch
from torch import nn

from aotc.compiler import bounded

FEATURES, CLASSES = 16, 4


def soft_clip(h: torch.Tensor, limit: float = 4.0) -> torch.Tensor:
    """A helper the model calls: converted too, because it is the user's own code."""
    if h.abs().max() > limit:
        return h * (limit / h.abs().max())
    return h


class EarlyExitClassifier(nn.Module):
    def __init__(self, threshold: float = 0.6):
        super().__init__()
        self.threshold = threshold
        self.stem = nn.Linear(FEATURES, 32)
        self.quick_head = nn.Linear(32, CLASSES)
        self.refine = nn.Linear(32, 32)
        self.deep_head = nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.Linear(32, CLASSES))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:  # a shape check: plain Python, decided while tracing
            raise ValueError(f"expected a batch of feature vectors, got shape {tuple(x.shape)}")
        loud = x.abs().mean() > 2.0
        return x / x.abs().mean() if loud else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = soft_clip(torch.relu(self.stem(self.normalize(x))))
        quick = self.quick_head(h).softmax(-1)
        if quick.max(-1).values.min() > self.threshold:
            return quick  # confident for the whole batch: exit early
        steps = torch.zeros((), dtype=torch.int64)
        while bounded(h.norm() > 3.0, max_iters=3):
            h = 0.5 * h + 0.5 * torch.tanh(self.refine(h))
            steps = steps + 1
        deep = self.deep_head(h).softmax(-1)
        return _blend(deep, quick, steps)


def _blend(deep: torch.Tensor, quick: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    if steps > 0:
        return (deep + quick) / 2
    return deep


def make_model() -> nn.Module:
    """The factory `aotc trace FILE.py:make_model` calls (a real model would load its weights here)."""
    torch.manual_seed(0)
    model = EarlyExitClassifier().eval()
    with torch.no_grad():
        model.quick_head.weight.mul_(12.0)  # confident on strong, clipped features
    return model


def paths_taken(model: EarlyExitClassifier, x: torch.Tensor) -> str:
    """Which way eager PyTorch goes for `x` (for the report; recomputes the model's decisions)."""
    with torch.no_grad():
        loud = bool(x.abs().mean() > 2.0)
        h = soft_clip(torch.relu(model.stem(model.normalize(x))))
        if bool(model.quick_head(h).softmax(-1).max(-1).values.min() > model.threshold):
            return f"loud={loud} early-exit"
        steps = 0
        while bool(h.norm() > 3.0) and steps < 3:
            h = 0.5 * h + 0.5 * torch.tanh(model.refine(h))
            steps += 1
        return f"loud={loud} loop-steps={steps}"


def main() -> None:
    import argparse
    from pathlib import Path

    import numpy as np

    from aotc import compiler
    from aotc.compiler.onnx_export import save_onnx
    from aotc.passes import PassManager

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="examples/out/control_flow.onnx")
    ap.add_argument("--bundle", help="Also compile for this machine's x86 target into this bundle directory and "
                                     "run it with the thin runtime.")
    args = ap.parse_args()

    model = make_model()
    example = torch.randn(2, FEATURES)
    graph = compiler.trace(model, (example,))
    traced_nodes = len(graph.nodes)
    PassManager().run(graph)  # the default pipeline, as for an imported ONNX model
    print(f"traced {traced_nodes} nodes, {len(graph.nodes)} after the default pipeline: {graph.op_histogram()}")

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TracerWarnings say exactly what goes wrong below
        jit = torch.jit.trace(model, (example,), check_trace=False)
    worst, jit_wrong, seen = 0.0, 0, {}
    for i, scale in enumerate([0.05, 0.3, 1.0, 3.0, 10.0, 30.0] * 4):
        x = torch.randn(2, FEATURES, generator=torch.Generator().manual_seed(i)) * scale
        with torch.no_grad():
            want = model(x).numpy()
            jit_out = jit(x).numpy()
        got = compiler.interpret(graph, {"x": x.numpy()})["output"]
        worst = max(worst, float(np.abs(got - want).max()))
        jit_wrong += not np.allclose(jit_out, want, atol=1e-5)
        path = paths_taken(model, x)
        seen[path] = seen.get(path, 0) + 1
    print("paths taken by the test inputs:", ", ".join(f"{k} ×{v}" for k, v in sorted(seen.items())))
    print(f"aotc vs eager: max abs error {worst:.2e};  torch.jit.trace wrong on {jit_wrong} of {sum(seen.values())}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_onnx(graph, args.out)
    print(f"wrote {args.out}")
    if args.bundle:
        compile_and_run(model, args.bundle)


def compile_and_run(model: EarlyExitClassifier, bundle_dir: str) -> None:
    """Trace → x86 bundle → the thin runtime, against eager PyTorch. The x86 target has no kernels
    for the pipeline's fused ops yet, so this compiles the traced graph as it is."""
    import numpy as np

    from aotc import compiler
    from aotc import runtime_stub
    import aotc

    graph = compiler.trace(model, (torch.randn(2, FEATURES),))
    bundle = runtime_stub.load(str(aotc.compile(graph, bundle_dir, target="host").path))
    worst = 0.0
    for i, scale in enumerate([0.05, 0.3, 1.0, 3.0, 10.0, 30.0] * 4):
        x = torch.randn(2, FEATURES, generator=torch.Generator().manual_seed(i)) * scale
        with torch.no_grad():
            want = model(x).numpy()
        worst = max(worst, float(np.abs(bundle.run({"x": x.numpy()})["output"] - want).max()))
    print(f"x86 bundle in {bundle_dir} vs eager: max abs error {worst:.2e}")


if __name__ == "__main__":
    main()
