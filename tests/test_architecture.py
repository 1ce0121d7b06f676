"""The layers of ARCHITECTURE.md hold: no module of llmopt imports a higher layer, and the module
import graph has no cycle. Every import counts, including those inside functions (a lazy import
that dodges a circle is still the circle)."""

import ast
from pathlib import Path

import llmopt

PACKAGE = Path(llmopt.__file__).parent

# lowest first; a module is in the layer of its longest listed prefix
LAYERS = [
    ("data", "tokenizer", "quality", "checkpoints", "augment"),  # data
    ("models",),  # the model
    ("generation", "capture", "host_load", "timing"),  # what every decoder and every measurement shares
    ("spec_stream",),  # the algorithm
    ("train",),  # training (its objectives include spec_stream.loss)
    ("strategies",),  # the techniques
    ("near_ties", "options", "kernel_count", "measure", "compare", "hardware"),  # measurement
    ("cli", "__main__", "pytest_gate", "pytest_xdist", "report", "plots", "names"),  # front ends and the report
]


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted names under llmopt ("" for the package itself, "strategies" for its __init__)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def layer(module: str) -> int:
    best, level = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), i
    assert level is not None, f"llmopt.{module} is in no layer: add it to LAYERS (and ARCHITECTURE.md)"
    return level


def imports(module: str, source: str, is_package: bool, known) -> set[str]:
    """The llmopt modules `module` (whose code is `source`) imports, anywhere in its body."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()

    def add(name: str) -> None:
        while name and name not in known:  # `from pkg import name`: a module, else the package
            name = name.rpartition(".")[0]
        if name != module:
            found.add(name)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("llmopt."):
                    add(alias.name.removeprefix("llmopt."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module == "llmopt" or (node.module or "").startswith("llmopt."):
                target = node.module.removeprefix("llmopt").removeprefix(".")
            else:
                continue
            for alias in node.names:
                add(f"{target}.{alias.name}".lstrip("."))
    return found


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    known = module_names(root)
    return {m: imports(m, p.read_text(), p.name == "__init__.py", known) for m, p in known.items() if m}


def upward(edges: dict[str, set[str]]) -> list[str]:
    return [f"llmopt.{m} (layer {layer(m)}) imports llmopt.{d} (layer {layer(d)})"
            for m, deps in sorted(edges.items()) for d in sorted(deps) if d and layer(d) > layer(m)]


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """One line per back edge of a depth-first walk: each closes a cycle."""
    state, found = {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        path = path + [m]
        for d in sorted(edges.get(m, ())):
            if state.get(d) == "open":
                found.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path)
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    return found


def test_no_module_imports_a_higher_layer():
    assert not upward(graph()), "\n".join(upward(graph()))


def test_the_import_graph_has_no_cycle():
    assert not cycles(graph()), "\n".join(cycles(graph()))


def test_the_checks_see_lazy_imports_and_circles():
    """Both checks can fail: a function-level import of a higher layer, and a circle through it."""
    known = {"models", "models.gpt_neo", "strategies", "strategies.base"}
    lazy = "import torch\n\ndef f():\n    from ..strategies.base import Strategy\n"
    edges = {"models.gpt_neo": imports("models.gpt_neo", lazy, False, known),
             "strategies.base": imports("strategies.base", "from ..models import gpt_neo\n", False, known)}
    assert edges == {"models.gpt_neo": {"strategies.base"}, "strategies.base": {"models.gpt_neo"}}
    assert upward(edges) == ["llmopt.models.gpt_neo (layer 1) imports llmopt.strategies.base (layer 5)"]
    assert cycles(edges) == ["models.gpt_neo -> strategies.base -> models.gpt_neo"]
