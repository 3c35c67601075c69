"""Loading exported torch programs (.pt2) without running code from the file.

`torch.export.load` reads a zip archive: a JSON graph, raw tensor payloads, and, in
some cases, pickles (payloads flagged `use_pickle`, custom/opaque objects, legacy
`.pt` members, sample inputs when `weights_only=True` fails it retries with
`weights_only=False`) and compiled AOTInductor libraries. Its graph deserialiser
also resolves any `torch.*` attribute path as a call target. So before calling it
we refuse every archive member that would be unpickled or executed, check sample
inputs with `torch.load(weights_only=True)` ourselves, and after loading we refuse
graphs that call anything other than aten/prims operators.
"""

from __future__ import annotations

import io
import json
import operator
import zipfile
from pathlib import Path

import torch
from torch import nn

from lrpseg.registry.errors import RegistryError

COMPILED_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
PAYLOAD_CONFIGS = ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json")
PICKLED_PREFIXES = ("custom_obj_", "opaque_obj_")
LEGACY_MEMBERS = ("data/weights/model.pt", "data/constants/model.pt")
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
OP_NAMESPACES = ("aten", "prims")
DENIED_OPS = ("from_file",)  # aten ops that touch the filesystem
BUILTIN_OPS = {operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
               operator.mod, operator.neg, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
               operator.ge, operator.and_, operator.or_, operator.not_}  # fmt: skip
# (op, index of its "training" argument): an export taken in training mode
TRAINING_FLAGS = {"aten::batch_norm": 5, "aten::dropout": 2, "aten::feature_dropout": 2}


def refuse(path: Path, problem: str) -> RegistryError:
    return RegistryError(f"model directory {path.parent}: {path.name}: {problem}")


def archive_members(path: Path) -> dict[str, bytes]:
    """Members under the archive's single root folder, keyed by their path inside it."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            roots = {name.split("/", 1)[0] for name in names}
            if len(roots) != 1 or not all("/" in name for name in names):
                raise refuse(path, "not a torch.export archive (expected one root folder)")
            root = roots.pop()
            return {name[len(root) + 1 :]: archive.read(name) for name in names}
    except (zipfile.BadZipFile, OSError) as exc:
        raise refuse(path, f"not a readable torch.export archive ({exc})") from None


def check_archive(path: Path) -> None:
    """Refuse archives whose loading would unpickle objects or load compiled code."""
    members = archive_members(path)
    if members.get("archive_format", b"").strip() != b"pt2" or "models/model.json" not in members:
        raise refuse(path, "not a torch.export.save archive of one program (no archive_format or models/model.json)")
    for name in members:
        if name.startswith(COMPILED_DIRS):
            raise refuse(path, f"holds compiled code ({name}), which is never loaded")
        if name in LEGACY_MEMBERS or (name.startswith("models/") and name != "models/model.json"):
            raise refuse(path, f"holds {name}; re-save one program with a current torch.export.save")
    for config_name in PAYLOAD_CONFIGS:
        if config_name not in members:
            raise refuse(path, f"{config_name} missing")
        try:
            entries = json.loads(members[config_name])["config"]
        except (ValueError, KeyError, TypeError):
            raise refuse(path, f"{config_name} is not a payload table") from None
        for fqn, meta in entries.items():
            if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(PICKLED_PREFIXES):
                raise refuse(path, f"{fqn!r} is stored as a pickle, which is never loaded")
    if members.get(SAMPLE_INPUTS):
        try:
            torch.load(io.BytesIO(members[SAMPLE_INPUTS]), weights_only=True)
        except Exception as exc:
            raise refuse(path, f"sample inputs do not load with weights_only=True ({type(exc).__name__})") from None


def check_graph(path: Path, program: torch.export.ExportedProgram) -> None:
    """Refuse graphs calling anything but aten/prims ops and a few operator builtins."""
    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            target = node.target
            if node.op != "call_function":
                raise refuse(path, f"graph node {node.name} is a {node.op}; only operator calls are allowed")
            if isinstance(target, torch._ops.OpOverload):
                namespace, _, op_name = target._schema.name.partition("::")
                if namespace not in OP_NAMESPACES or op_name in DENIED_OPS:
                    raise refuse(path, f"graph calls {target._schema.name}, which is not allowed")
                flag = TRAINING_FLAGS.get(target._schema.name)
                if flag is not None and len(node.args) > flag and node.args[flag] is True:
                    raise refuse(path, f"exported in training mode ({target._schema.name}); export model.eval()")
            elif not isinstance(target, torch._ops.HigherOrderOperator) and target not in BUILTIN_OPS:
                raise refuse(path, f"graph calls {target!r}, which is not an operator we allow")


def load_exported(path: Path) -> nn.Module:
    """The module of a checked .pt2 archive."""
    check_archive(path)
    try:
        program = torch.export.load(path)
    except Exception as exc:
        first_line = (str(exc).splitlines() or [""])[0][:300]
        raise refuse(path, f"torch.export.load failed: {type(exc).__name__}: {first_line}") from None
    check_graph(path, program)
    return program.module()
