"""The ascend target: Huawei Ascend NPUs through CANN's ATC compiler and AscendCL runtime (see README.md).

ATC and AscendCL cannot be installed everywhere, so a bundle holds what they take: an ONNX model ATC's
parser accepts (every op checked against atc_onnx_ops.json, the recorded registrations), build_om.sh with
the exact atc command (run by `aotc compile` where `atc` is on PATH), and a C++ AscendCL driver with
aotc's C API (aotc_load/aotc_run/aotc_free)."""
from ..base import TargetOption, TargetSpec, register_target

register_target(TargetSpec(
    name="ascend",
    description="Huawei Ascend NPUs via CANN: ATC-ready ONNX (ops checked against ATC's parser registrations), the "
                "atc command, an AscendCL C++ driver; --quantize int8 is refused (INT8 for Ascend goes through "
                "CANN's AMCT, see targets/ascend/README.md)",
    factory="aotc.targets.ascend.target:ascend_target",
    loader="aotc.targets.ascend.loader:AscendBundle",
    reference="aotc.targets.ascend.loader:reference_run",
    options=(
        TargetOption("soc_version", "ascend: the Ascend chip ATC compiles for, 'Ascend' + the Chip Name that "
                     "`npu-smi info` prints (e.g. Ascend310P3, Ascend910B1, Ascend310B1); required."),
        TargetOption("precision", "Floating-point precision of the compiled model's arithmetic.",
                     choices=("fp16", "fp32")),
        TargetOption("onnx_opset", "ascend: the ONNX opset of the model handed to ATC, 11-18 (default 15; ATC "
                     "looks every op up at this opset; CANN before 7.0 documents v9-v13).", type=int),
    ),
))
