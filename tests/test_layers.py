"""The layers stay apart: the library (`pixelclip/`) imports no application dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPLICATION_ONLY = ("ray", "mlflow", "s3fs", "pyarrow", "boto3", "botocore", "fsspec", "pipelines")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a module, at any depth (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_the_library_imports_no_application_dependency():
    modules = sorted((ROOT / "pixelclip").rglob("*.py"))
    assert len(modules) > 30 and any(m.name == "masks.py" for m in modules)  # the walk sees the whole library
    bad = [f"{m.relative_to(ROOT)}:{line} imports {pkg}" for m in modules for line, pkg in _imports(m)
           if pkg in APPLICATION_ONLY]
    assert not bad, "\n".join(bad)


def test_the_walk_finds_an_import_hidden_in_a_function(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    import ray.data\n    from mlflow import log_metric\n")
    assert _imports(mod) == [(2, "ray"), (3, "mlflow")]
