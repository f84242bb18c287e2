"""The ascend target: the IR graph → an ONNX model ATC parses, the atc command, the AscendCL driver.

Target passes (after the generic pipeline): fit_to_target decomposes the fused ops ATC has no parser for
(Attention, FusedMatMul, FusedConv, SkipLayerNormalization) and runs int8 ops in float (whose Q/DQ nodes
ATC then refuses: INT8 goes through AMCT); decompose_for_opset rewrites Gelu and LayerNormalization, which
ONNX added after the export opset. compile() exports, cleans with onnx-graphsurgeon and checks every node
against the recorded ATC registrations before any file exists.
"""
from __future__ import annotations

import re

from aotc.compiler.ir import Graph, Node
from aotc.passes.decompose_for_opset import INTRODUCED_AT
from aotc.passes.decompose_fused import DECOMPOSABLE
from aotc.targets.base import BuildContext, Capabilities, Target, TargetBuild, UnknownTargetError
from aotc.targets.bundle import io_description

from .atc_command import PRECISION_MODE, atc_argv, build_script, run_atc_if_present
from .atc_support import OPSETS, atc_table, check_graph, check_model, why_unsupported
from .driver import driver_files
from .onnx_model import atc_onnx_model, model_bytes

DEFAULT_OPSET = 15
SOC_VERSION = re.compile(r"Ascend[0-9A-Za-z_]+")


class AscendTarget(Target):
    capabilities = Capabilities(level="graph", dtypes=("float32", "float16"))

    def __init__(self, soc_version: str, precision: str, onnx_opset: int):
        self.name = "ascend"
        self.soc_version, self.precision, self.onnx_opset = soc_version, precision, onnx_opset
        self.description = f"Huawei {soc_version} via ATC (ONNX opset {onnx_opset}, {precision})"

    def manifest(self) -> dict:
        m = super().manifest()
        m.update({"soc_version": self.soc_version, "precision": self.precision, "onnx_opset": self.onnx_opset,
                  "atc_precision_mode": PRECISION_MODE[self.precision]})
        return m

    def pipeline(self) -> list[tuple[str, dict]]:
        return [("fit_to_target", {}), ("decompose_for_opset", {"opset": self.onnx_opset})]

    def toolchain_versions(self) -> dict[str, str]:
        # onnx serializes model.onnx, onnx-graphsurgeon cleans it; compile runs atc itself where it is on PATH
        from ..toolchains import command_version, package_version
        return {"onnx": package_version("onnx"), "onnx-graphsurgeon": package_version("onnx-graphsurgeon"),
                "atc": command_version("atc")}

    def supports(self, node: Node) -> str | None:
        if node.op_type in DECOMPOSABLE or node.op_type in INTRODUCED_AT:
            return f"ATC's parser has no {node.op_type} at opset {self.onnx_opset}"
        return why_unsupported(node.op_type, "", self.onnx_opset)

    def compile(self, graph: Graph, ctx: BuildContext) -> TargetBuild:
        check_graph(graph, self.onnx_opset)  # one error naming every node ATC lacks, before anything is written
        model = atc_onnx_model(graph, self.onnx_opset)
        check_model(model)  # and what ATC will read, after export and onnx-graphsurgeon
        onnx_bytes = model_bytes(model)
        inputs, outputs = io_description(graph.inputs), io_description(graph.outputs)
        argv = atc_argv(inputs, self.soc_version, self.precision)
        files = {"model.onnx": onnx_bytes, "build_om.sh": build_script(argv),
                 **driver_files(inputs, outputs, ctx.model_id)}
        om = run_atc_if_present(argv, onnx_bytes, ctx.workdir / "atc", ctx.progress)
        if om is not None:
            files["model.om"] = om
        ops = sorted({n.op_type for n in model.graph.node})
        manifest = {"ascend": {
            "atc_command": argv, "model_om": om is not None,
            "onnx": {"file": "model.onnx", "opset": self.onnx_opset, "nodes": len(model.graph.node), "op_types": ops,
                     "cleanup": "onnx-graphsurgeon fold_constants(fold_shapes=False).cleanup().toposort()"},
            "op_table": {"file": "targets/ascend/atc_onnx_ops.json",
                         "sources": [{"repository": s["repository"], "commit": s["commit"]}
                                     for s in atc_table()["sources"]]},
            "driver": {"folder": "driver", "library": "libaotc_ascend.so", "api": "aotc_runtime.h"}}}
        built = "model.om built by atc" if om is not None else "run build_om.sh on a machine with CANN for model.om"
        return TargetBuild(files=files, manifest=manifest,
                           summary=f"model.onnx (opset {self.onnx_opset}, {len(model.graph.node)} nodes, every op "
                                   f"registered in ATC's parser), build_om.sh for {self.soc_version}, AscendCL "
                                   f"driver; {built}")


def ascend_target(name: str = "ascend", soc_version: str | None = None, precision: str | None = None,
                  onnx_opset: int | None = None) -> AscendTarget:
    """The registration's factory."""
    if not soc_version:
        raise UnknownTargetError("--target ascend needs --soc-version: 'Ascend' followed by the Chip Name that "
                                 "`npu-smi info` prints on the machine that will run the model (e.g. Ascend310P3, "
                                 "Ascend910B1).")
    if not SOC_VERSION.fullmatch(soc_version):
        raise UnknownTargetError(f"--soc-version {soc_version!r} is not an Ascend chip name: write 'Ascend' followed "
                                 "by the Chip Name from `npu-smi info`, without spaces (e.g. Ascend310P3).")
    opset = DEFAULT_OPSET if onnx_opset is None else onnx_opset
    if opset not in OPSETS:
        raise UnknownTargetError(f"--onnx-opset {opset} for target ascend is not one of {OPSETS.start}-"
                                 f"{OPSETS.stop - 1}.")
    return AscendTarget(soc_version, precision or "fp16", opset)
