"""The coreml Target: options, what it can run, and compile (lower -> convert -> normalized package)."""
from __future__ import annotations

from aotc.compiler.ir import Graph, Node

from ..base import BuildContext, Capabilities, Target, TargetBuild
from .deployment import DEFAULT_DEPLOYMENT, DEFAULT_PRECISION, DEPLOYMENTS, Deployment
from .lowering import IO_DTYPES, UnsupportedOnCoreMLError, format_unsupported, mil_name
from .rules import unsupported_nodes, why_unsupported
from .package import PACKAGE, SPEC_PATH, convert, import_coremltools, package_files


class CoreMLTarget(Target):
    def __init__(self, name: str, deployment: Deployment, precision: str):
        self.name = name
        self.deployment = deployment
        self.precision = precision
        self.description = f"Core ML ML Program, {deployment.name}, {precision}"
        self.capabilities = Capabilities(level="graph", dtypes=("float32", "float16", "int32", "bool", "uint8",
                                                                "int8"))

    def manifest(self) -> dict:
        return {**super().manifest(), "coreml_target": self.deployment.name, "precision": self.precision}

    def toolchain_versions(self) -> dict[str, str]:
        from ..toolchains import package_version
        return {"coremltools": package_version("coremltools")}

    def pipeline(self) -> list[tuple[str, dict]]:
        # fit_to_target: QuantizedAttention -> int8 projections + float core; fused ops a lowering refuses
        # (e.g. attention with run-time weights) -> primitive ops
        return [("fit_to_target", {})]

    def supports(self, node: Node) -> str | None:
        if node.op_type == "QuantizedAttention":
            return "Core ML has no int8 attention op; the projections run as int8-weight linear ops"
        return why_unsupported(node, self.deployment)

    def compile(self, graph: Graph, ctx: BuildContext) -> TargetBuild:
        found = unsupported_nodes(graph, self.deployment)
        if found:
            raise UnsupportedOnCoreMLError(format_unsupported(found, self.deployment))
        import_coremltools()
        from .rules import lower_graph
        ctx.progress(f"coreml: lowering {len(graph.nodes)} nodes to MIL ({self.deployment.name})")
        model = convert(lower_graph(graph, self.deployment), self.deployment, self.precision)
        files = package_files(model, ctx.workdir, ctx.model_id)
        spec = model.get_spec()
        ops = sum(len(b.operations) for f in spec.mlProgram.functions.values()
                  for b in f.block_specializations.values())
        weights = sum(len(d) for n, d in files.items() if "/weights/" in n)
        manifest = {"coreml": {
            "package": PACKAGE, "spec": f"{PACKAGE}/{SPEC_PATH}", "deployment_target": self.deployment.name,
            "precision": self.precision, "spec_version": spec.specificationVersion, "mil_ops": ops,
            "weight_bytes": weights,
            # how each aotc input/output crosses Core ML's interface (int64/bool/uint8 travel as int32)
            "inputs": [_io(v) for v in graph.inputs], "outputs": [_io(v) for v in graph.outputs]}}
        summary = (f"{PACKAGE} ({self.deployment.name}, {self.precision}, spec {spec.specificationVersion}): "
                   f"{ops} MIL ops, {weights / 1e6:.2f} MB weights")
        return TargetBuild(files=files, manifest=manifest, summary=summary)


def _io(v) -> dict:
    return {"name": v.name, "coreml_name": mil_name(v.name), "dtype": v.dtype.value,
            "coreml_dtype": {"fp32": "float32", "fp16": "float16", "int32": "int32"}[IO_DTYPES[v.dtype]],
            "shape": list(v.shape), "coreml_shape": list(v.shape) or [1]}


def coreml_target(name: str, coreml_target: str | None = None, precision: str | None = None) -> CoreMLTarget:
    return CoreMLTarget(name, DEPLOYMENTS[coreml_target or DEFAULT_DEPLOYMENT], precision or DEFAULT_PRECISION)
