"""Bad input raises our own error types; pages and the CLI catch only those."""

import ast
from pathlib import Path

import pytest

from analysis.core.errors import CheckpointError, ConfigError, DatasetError, LensError, SpecError

ROOT = Path(__file__).resolve().parent.parent


def test_error_hierarchy():
    for cls in (SpecError, CheckpointError, DatasetError, ConfigError):
        assert issubclass(cls, LensError) and issubclass(cls, ValueError)


def _raised_and_caught(path: Path) -> tuple[set[str], set[str]]:
    raised, caught = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
            raised.add(node.exc.func.id)
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            names = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            caught |= {n.id for n in names if isinstance(n, ast.Name)}
    return raised, caught


@pytest.mark.parametrize("path", sorted((ROOT / "analysis").rglob("*.py")), ids=lambda p: p.name)
def test_library_raises_no_bare_value_errors(path):
    raised, _ = _raised_and_caught(path)
    assert "ValueError" not in raised, f"{path.name}: raise a LensError subclass instead"
    assert "AssertionError" not in raised
    tree = ast.parse(path.read_text())
    asserts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    assert not asserts, f"{path.name}: assert statements at lines {asserts} (they vanish under -O)"


@pytest.mark.parametrize("path", sorted([*(ROOT / "app_pages").glob("*.py"), *(ROOT / "ui").glob("*.py"),
                                         *(ROOT / "analysis" / "cli").glob("*.py"), ROOT / "analysis" / "__main__.py"]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pages_and_cli_catch_only_our_errors(path):
    """Catching ValueError or Exception would turn a library bug into a user-input message."""
    _, caught = _raised_and_caught(path)
    assert not caught & {"ValueError", "Exception", "BaseException", "TypeError", "RuntimeError"}, caught
