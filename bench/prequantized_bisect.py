"""Where does an x86 bundle of a pre-quantized model first depart from onnxruntime? (Issue 22's accuracy
question, answered with evidence rather than a tolerance.)

The model's own Q/DQ make every quantized activation an integer tensor both sides must agree on, so the
search compares integers, not floats:

1. aotc's pipeline graph (the passes, run by the reference interpreter) against onnxruntime without graph
   optimizations (the ONNX operators' reference semantics), at every QuantizeLinear output both have;
2. the bundle against the interpreter at every 8-bit tensor of the pipeline graph (each one made an extra
   output of the bundle; requantizing epilogues included), in graph order;
3. for the bundle's first departing element: the float value before rounding, in quantization steps, i.e.
   how far it lies from a .5 tie;
4. that one element's bundle value put into the interpreter run (everything else the reference's): if
   the output then differs from onnxruntime by what the bundle does, that single rounding is the whole
   difference, amplified by the layers after it.

    .venv/bin/python bench/prequantized_bisect.py minilm|efficientnet
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "examples")]

import numpy as np  # noqa: E402


def case(name: str):
    cache = ROOT / ".cache" / "test-models"
    if name == "minilm":
        from models import minilm_feeds
        from prequantized_models import minilm_qdq
        feeds = minilm_feeds(batch=1, seed=0)
        return minilm_qdq(cache), feeds, {k: v.shape for k, v in feeds.items()}
    from prequantized_models import efficientnet_qdq
    from test_quant_models import photo_test_set
    return efficientnet_qdq(cache), photo_test_set()[0], None


def ort_all_values(path: Path, feeds: dict) -> dict:
    """Every node output of the model under onnxruntime's reference semantics (ORT_DISABLE_ALL)."""
    import onnx
    import onnxruntime as ort
    m = onnx.load(str(path))
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=o) for n in m.graph.node for o in n.output if o and o not in have)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def steps_before_rounding(node, env: dict, idx: tuple) -> float | None:
    """The value the node rounds at `idx`, in steps of its output scale (x / y_scale, before + zero point)."""
    def arr(v):
        return None if v is None else (v.const if v.const is not None else env[v.name])
    if node.op_type == "QuantizeLinear":
        return float(env[node.inputs[0].name][idx] / np.float32(node.inputs[1].const.reshape(())))
    if node.op_type in ("QuantizedMatMul", "QuantizedConv") and len(node.inputs) > 8:
        y = node.op.run([arr(v) for v in node.inputs[:7]], node.attrs)[0]
        return float(y[idx] / np.float32(node.inputs[7].const.reshape(())))
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=["minilm", "efficientnet"])
    args = ap.parse_args(argv)
    import aotc
    from aotc import compiler
    from aotc.passes import PassContext, PassManager
    from test_prequantized import output_step
    path, feeds, shapes = case(args.model)
    ref = ort_all_values(path, feeds)
    graph = compiler.load_onnx(path, input_shapes=shapes)
    PassManager(None, context=PassContext()).run(graph)
    env = compiler.interpret(graph, feeds, keep_all=True)
    out = graph.outputs[0].name
    step = output_step(path)

    same_name = [n for n in graph.nodes if n.op_type == "QuantizeLinear" and n.outputs[0].name in ref]
    flips = sum(int(np.any(env[n.outputs[0].name] != ref[n.outputs[0].name])) for n in same_name)
    print(f"1. interpreter vs onnxruntime reference: {flips} of {len(same_name)} QuantizeLinear outputs differ; "
          f"output max diff {np.abs(env[out] - ref[out]).max():.3g} ({np.abs(env[out] - ref[out]).max() / step:.2f} "
          f"steps of {step:.4g})")

    quantized = [n for n in graph.nodes if n.outputs[0].dtype.value in ("uint8", "int8")]
    outputs = list(graph.outputs)
    graph.outputs = outputs + [n.outputs[0] for n in quantized if n.outputs[0] not in outputs]
    with tempfile.TemporaryDirectory() as tmp:  # (compile copies the graph)
        got = aotc.compile(graph, Path(tmp) / "b", target="x86-avx512", passes="none").run(feeds)
    graph.outputs = outputs
    print(f"   bundle vs onnxruntime reference: output max diff {np.abs(got[out] - ref[out]).max():.4g} "
          f"({np.abs(got[out] - ref[out]).max() / step:.2f} steps)")
    first = None
    for n in quantized:
        d = np.abs(got[n.outputs[0].name].astype(np.int32) - env[n.outputs[0].name].astype(np.int32))
        if d.any():
            print(f"2. bundle vs interpreter: {n.op_type} {n.name}: {int((d > 0).sum())} of {d.size} differ, "
                  f"max {d.max()} step(s)")
            first = first or (n, tuple(np.argwhere(d)[0]))
    if first is None:
        print("2. the bundle equals the interpreter at every 8-bit tensor")
        return 0
    node, idx = first
    t = steps_before_rounding(node, env, idx)
    ulp = float(np.spacing(np.float32(abs(t)))) if t is not None else float("nan")
    print(f"3. first departure {node.name}{list(idx)}: interpreter {env[node.outputs[0].name][idx]}, bundle "
          f"{got[node.outputs[0].name][idx]}; value before rounding {t!r} steps, "
          f"{abs(abs(t) % 1 - 0.5) / ulp:.1f} float32 ulps from a .5 tie" if t is not None else "")

    def inject(n, results):
        if n is node:
            results[0][idx] = got[node.outputs[0].name][idx]
    y = compiler.interpret(graph, feeds, observer=inject)[out]
    d = np.abs(y - ref[out]).max()
    print(f"4. the interpreter with that one element as the bundle has it: output max diff vs onnxruntime "
          f"{d:.4g} ({d / step:.2f} steps); the bundle's: {np.abs(got[out] - ref[out]).max():.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
