"""The library's layers stay one-way: a module imports only from its own layer or the layers below, the
module-level import graph has no cycle, and eas modules are imported at the top of a file (an import
inside a function hides a dependency; the few that must stay carry a `# lazy:` comment saying why)."""

import ast
import importlib
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from eas.models.causal_lm import CausalLMTarget
from eas.models.mini_llava import Batch
from eas.models.prompt import prompt_context

EAS = Path(__file__).resolve().parents[1] / "eas"

# Lowest first. A module may import from its own layer or any layer before it in this list.
LAYERS = ["core", "data", "models", "method", "baselines", "export", "measure", "study"]
ROOT_MODULES = {"eas", "eas.__main__", "eas._legacy"}  # the package's own entry points


def module_name(path: Path) -> str:
    parts = list(path.relative_to(EAS.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    if module in ROOT_MODULES:
        return None
    top = module.split(".")[1]
    if top not in LAYERS:
        raise AssertionError(f"{module} is in no layer: put it in one of eas/{{{','.join(LAYERS)}}}/.")
    return LAYERS.index(top)


def imports(path: Path):
    """(imported eas module, line, inside a function, the line's text) for every import of eas."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            target, names = None, [a.name for a in node.names]
        else:
            continue
        found = {resolve(n) for n in ([target] if target else []) + names if n == "eas" or n.startswith("eas.")}
        for module in sorted(found - {"eas"} if len(found) > 1 else found):
            yield module, node.lineno, id(node) in inner, lines[node.lineno - 1]


ALL = {module_name(p): p for p in EAS.rglob("*.py")}


def resolve(name: str) -> str:
    """The module a dotted import name refers to: `eas.models.arch.X` -> `eas.models.arch`."""
    while name not in ALL and "." in name:
        name = name.rpartition(".")[0]
    return name


def test_every_module_is_in_a_layer():
    for module in ALL:
        layer_of(module)


def test_imports_go_down_only():
    bad = []
    for module, path in ALL.items():
        mine = layer_of(module)
        for target, line, _, _ in imports(path):
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{path.relative_to(EAS.parent)}:{line} ({LAYERS[mine]}) imports {target} "
                           f"({LAYERS[theirs]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {m: {t for t, _, inside, _ in imports(p) if not inside and t != m and t in ALL} for m, p in ALL.items()}
    graph = {m: {t for t in ts if not m.startswith(t + ".") and t != "eas"} for m, ts in graph.items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            visit(t)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_eas_imports_sit_at_the_top():
    bad = [f"{path.relative_to(EAS.parent)}:{line}: {text.strip()}"
           for module, path in ALL.items() for target, line, inside, text in imports(path)
           if inside and "# lazy:" not in text]
    assert not bad, "eas imports inside functions (move them up, or say why with `# lazy: reason`):\n" + "\n".join(bad)


@pytest.mark.parametrize("old, new", [("eas.pia", "eas.method.pia"), ("eas.reparam", "eas.method.reparam"),
                                      ("eas.skip", "eas.method.skip")])
def test_legacy_paths_are_the_same_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_an_export_written_before_the_layout_still_loads():
    """tests/fixtures/legacy_export: a tiny EAS export written by commit bae08df (flat eas/ modules; its copied
    modeling_eas.py imports eas.pia, eas.reparam, eas.skip, eas.hf). It loads through transformers with that
    copied file and computes the logits it computed when it was written."""
    fixture = Path(__file__).parent / "fixtures" / "legacy_export"
    with tempfile.TemporaryDirectory() as tmp:  # transformers may write next to the checkpoint
        ckpt = Path(shutil.copytree(fixture / "eas-llama-bae08df", Path(tmp) / "ckpt"))
        assert "from eas import pia" in (ckpt / "modeling_eas.py").read_text()
        model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True).eval()
        expected = torch.load(fixture / "expected-logits.pt")
        batch = Batch(expected["input_ids"], expected["attention_mask"], expected["attention_mask"].bool())
        with torch.no_grad(), prompt_context(batch.prompt_mask, batch.attention_mask):
            hidden, _ = CausalLMTarget(model)(batch.input_ids, batch.attention_mask)
            logits = model.lm_head(hidden)
    # float32 reductions may be ordered differently by another torch build or CPU (seen: 3e-5 on logits of ~5);
    # a wrong layer or a missing adapter moves them by whole units.
    assert torch.allclose(logits, expected["logits"], rtol=1e-4, atol=1e-4)


def test_notebooks_stay_thin():
    """Logic lives in eas/ with tests; a chapter's code cells only call it (issue 24: none over 25 lines)."""
    import json

    notebooks = sorted((EAS.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    long = [f"{nb.name} cell {i}: {n} lines" for nb in notebooks
            for i, cell in enumerate(json.loads(nb.read_text())["cells"])
            if cell["cell_type"] == "code" and (n := len("".join(cell["source"]).splitlines())) > 25]
    assert not long, "notebook cells over 25 lines (move the logic into eas/):\n" + "\n".join(long)
