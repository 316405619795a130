"""The package's shape holds: light imports, lower layers below upper ones, short functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "cnnjax"
# Small modules every layer may use (cnnjax.logs: the one logger).
SHARED = ("cnnjax.errors", "cnnjax.imagenet", "cnnjax.logs", "cnnjax.progress",
          "cnnjax.runtime")
# The lower layers (what research scripts import piece by piece) and what each may import
# besides itself and SHARED. Everything else (train, the modes, main, config, checkpoint,
# parallel, ...) sits above them.
LOWER_LAYERS = {
    "cnnjax.models": (),
    "cnnjax.audio": (),
    "cnnjax.pretrained": ("cnnjax.models",),
    "cnnjax.data": ("cnnjax.audio",),
}
HEAVY = ("grain", "tensorflow_datasets", "matplotlib")
MAX_FUNCTION_LINES = 60
# Files whose long functions are being split now; empty this once they are.


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cnnjax_imports(path: Path) -> set[str]:
    """Every cnnjax module `path` imports, at the top or inside a function; `from cnnjax
    import x` counts as `cnnjax.x`."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "cnnjax":
                imported |= {f"cnnjax.{alias.name}" for alias in node.names}
            else:
                imported.add(node.module)
    return {name for name in imported if name.split(".")[0] == "cnnjax"}


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def test_lower_layers_import_only_what_lies_below_them():
    checked, upward = 0, set()
    for package, below in LOWER_LAYERS.items():
        for path in sorted(PACKAGE.rglob("*.py")):
            if not _within(_module_name(path), (package,)):
                continue
            checked += 1
            upward |= {f"{_module_name(path)} imports {name}" for name in _cnnjax_imports(path)
                       if not _within(name, (package, *below, *SHARED))}
    assert checked > 30  # all four packages were found
    assert not upward, sorted(upward)


def _imported_modules(statement: str) -> set[str]:
    """The modules `python -X importtime -c statement` imports, by full name."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("package", ["cnnjax", "cnnjax.models", "cnnjax.pretrained",
                                     "cnnjax.audio"])
def test_importing_a_lower_layer_leaves_the_data_stack_out(package):
    modules = _imported_modules(f"import {package}")
    assert package in modules
    heavy = sorted(name for name in modules if name.split(".")[0] in HEAVY)
    assert not heavy, f"import {package} imports {heavy[:5]}"
    assert "cnnjax.train" not in modules and "cnnjax.data" not in modules


@pytest.mark.parametrize("module", ["cnnjax.config", "cnnjax.parallel", "cnnjax.checkpoint",
                                    "cnnjax.evaluation"])
def test_modules_below_the_loop_import_first_without_a_cycle(module):
    # They import cnnjax.train.state; the train package must not pull in the loop, which
    # imports them back.
    assert module in _imported_modules(f"import {module}")


def test_cnnjax_names_import_their_module_on_first_use():
    import cnnjax
    for name in cnnjax.__all__:
        assert getattr(cnnjax, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'resnet99'"):
        cnnjax.resnet99  # noqa: B018


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.end_lineno - node.lineno > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno} lines)")
    assert not long, long
