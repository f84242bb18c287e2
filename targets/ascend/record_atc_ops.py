"""Regenerate atc_onnx_ops.json, the table of ONNX operators ATC's parser registers, from the public sources.

ATC parses an ONNX model node by node: for a node of the default domain it builds the key
`ai.onnx::<the model's opset>::<OpType>` and looks it up, exactly, among the keys that operator plugins
registered with `REGISTER_CUSTOM_OP(...).OriginOpType(...)` (hicann/ge, parser/parser/onnx/onnx_parser.cc,
OnnxModelParser::ConstructOriType / AdapterOpType; a miss is error E16002). The standard ONNX plugins live in
`*/framework/*_onnx_plugin.cpp` of hicann/ops-nn, hicann/ops-math and hicann/ops-cv. This script reads those
files from local git checkouts and records, per op type, the opsets registered and the file that registers
them, plus each repository's commit:

    python -m targets.ascend.record_atc_ops hicann/ops-nn=PATH hicann/ops-math=PATH hicann/ops-cv=PATH

(run from the repository root; each PATH is a git checkout of that GitHub repository, read at HEAD with
`git show`, so bare mirrors work too). Only the `ai.onnx` domain is recorded: the npu:: and torch.onnx keys are for NPU-specific
exporters, not for standard ONNX.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

TABLE = Path(__file__).with_name("atc_onnx_ops.json")
KEY = re.compile(r"ai\.onnx::(\d+)::([A-Za-z0-9_]+)")
PLUGIN = re.compile(r"(^|/)framework/[^/]*_onnx_plugin\.cpp$")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def plugin_keys(repo: Path) -> dict[str, dict]:
    """{op type: {"opsets": set, "files": set}} for the ai.onnx keys in `repo`'s ONNX plugins at HEAD."""
    found: dict[str, dict] = defaultdict(lambda: {"opsets": set(), "files": set()})
    files = [f for f in _git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines() if PLUGIN.search(f)]
    for f in files:
        for line in _git(repo, "show", f"HEAD:{f}").splitlines():
            if line.lstrip().startswith("//"):
                continue  # a commented-out registration registers nothing
            for m in KEY.finditer(line):
                found[m.group(2)]["opsets"].add(int(m.group(1)))
                found[m.group(2)]["files"].add(f)
    return found


def record(repos: dict[str, Path]) -> dict:
    """The table, from {GitHub owner/name: local checkout}."""
    ops: dict[str, dict] = {}
    sources = []
    for name, repo in sorted(repos.items()):
        sources.append({"repository": f"https://github.com/{name}", "commit": _git(repo, "rev-parse", "HEAD").strip(),
                        "commit_date": _git(repo, "log", "-1", "--format=%cI").strip(),
                        "files": "*/framework/*_onnx_plugin.cpp"})
        for op, info in plugin_keys(repo).items():
            entry = ops.setdefault(op, {"opsets": set(), "registered_in": set()})
            entry["opsets"] |= info["opsets"]
            entry["registered_in"] |= {f"{name}:{f}" for f in info["files"]}
    return {
        "about": "ONNX operators (default domain) that ATC's ONNX parser registers, by opset. ATC looks up "
                 "'ai.onnx::<model opset>::<OpType>' exactly (hicann/ge parser/parser/onnx/onnx_parser.cc, "
                 "OnnxModelParser::ConstructOriType and AdapterOpType, error E16002 on a miss): a model at opset N "
                 "parses only if every node's op type is registered at N. Regenerate with "
                 "targets/ascend/record_atc_ops.py.",
        "parser_source": {"repository": "https://github.com/hicann/ge",
                          "file": "parser/parser/onnx/onnx_parser.cc"},
        "sources": sources,
        "ops": {op: {"opsets": sorted(e["opsets"]), "registered_in": sorted(e["registered_in"])}
                for op, e in sorted(ops.items())},
    }


def to_json(table: dict) -> str:
    """Indented JSON with one line per op, so a diff of a regenerated table reads op by op."""
    head = json.dumps({k: v for k, v in table.items() if k != "ops"}, indent=1, sort_keys=True)
    ops = ",\n".join(f"  {json.dumps(op)}: {json.dumps(e, sort_keys=True)}" for op, e in table["ops"].items())
    return head[:-2] + ',\n "ops": {\n' + ops + "\n }\n}\n"


def main(argv: list[str]) -> None:
    if not argv or any("=" not in a for a in argv):
        sys.exit(__doc__)
    repos = {name: Path(path) for name, _, path in (a.partition("=") for a in argv)}
    TABLE.write_text(to_json(record(repos)))
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main(sys.argv[1:])
