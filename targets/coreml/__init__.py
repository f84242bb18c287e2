"""The coreml target: aotc graphs as Core ML ML Programs (`model.mlpackage`) for iPhone, iPad and Mac
(see README.md). Built with coremltools on any host; run with Core ML on macOS."""
from ..base import TargetOption, TargetSpec, register_target
from .deployment import DEFAULT_DEPLOYMENT, DEFAULT_PRECISION, DEPLOYMENTS, PRECISIONS

register_target(TargetSpec(
    name="coreml",
    description="Apple Core ML ML Program (.mlpackage) for iOS/macOS: CPU, GPU and Neural Engine; built with "
                "coremltools (the [coreml] extra), runs on macOS",
    factory="aotc.targets.coreml.target:coreml_target",
    loader="aotc.targets.coreml.loader:CoreMLBundle",
    options=(
        TargetOption("coreml_target", f"coreml: the oldest OS the model must run on (default {DEFAULT_DEPLOYMENT}); "
                     "iOS17/macOS14 add run-time int8 activations, iOS18/macOS15 fused attention.",
                     choices=tuple(DEPLOYMENTS)),
        # `precision` is shared with other targets (ascend): neutral help, no default here (each target's own)
        TargetOption("precision", "Compute precision of float ops (coreml default: fp16, Core ML's own default; "
                     "ascend: see its README).", choices=PRECISIONS),
    ),
))
