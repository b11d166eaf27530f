"""The layers stay apart: the library (`pixelclip/`) imports no application dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth: a function-level import is still a
    dependency). `from pkg import name` counts as `pkg.name` when that is a module, else as `pkg`."""
    paths = sorted([*(ROOT / "pixelclip").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")])
    names = {_module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        me, deps = _module_name(path), set()
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([base] if base else [])])
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    deps.add(sub if sub in names else base)
        graph[me] = {d for d in deps if d in names and d != me}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    graph = _project_graph()
    assert "pipelines.storage.files" in graph and "pipelines.stages.train.driver" in graph
    cycles = _cycles(graph)
    assert not cycles, cycles


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _room(module: str) -> str:
    """The room a module lives in: `lib`, `stage:<name>` (pipelines/stages/<name>), `local` (the local
    service manager), `synth` (SynthScenes and its benchmark), `app` (the CLI and the demos) or `shared`
    (storage, MLflow client, models and weights, images, Ray helpers: what every stage may use)."""
    parts = module.split(".")
    if parts[0] == "pixelclip":
        return "lib"
    if parts[1:2] == ["stages"] and len(parts) > 2:
        return f"stage:{parts[2]}"
    if parts[1:2] in (["local"], ["synth"]):
        return parts[1]
    if parts[1:2] == ["cli"]:
        return "app"
    if module in ("pipelines.demo", "pipelines.library_demo"):
        return "app"
    return "shared"


def _may_import(me: str, there: str) -> bool:
    """What a room may import besides itself, the library and the shared modules."""
    if me == there or there in ("lib", "shared"):
        return True
    if me == "stage:tune":
        return there == "stage:train"  # a sweep runs training jobs: the one stage another stage uses
    if me == "synth":  # the benchmark runs the stages on the local stack
        return there.startswith("stage:") or there == "local"
    return me == "app"


def _crossings(graph: dict[str, set[str]]) -> list[str]:
    return [f"{module} ({_room(module)}) imports {dep} ({_room(dep)})" for module, deps in sorted(graph.items())
            for dep in sorted(deps) if not _may_import(_room(module), _room(dep))]


def test_the_rooms_import_only_what_they_may():
    """Stages import no other stage (tune runs train), nothing of the local service manager, of
    SynthScenes or of the CLI; shared modules import no stage; the local stack knows no stage. The
    stages run against any object store, MLflow server and Ray cluster."""
    graph = _project_graph()
    rooms = {_room(m) for m in graph}
    assert {"stage:prepare", "stage:train", "stage:tune", "stage:evaluate", "stage:segment", "local",
            "synth", "shared", "app"} <= rooms, rooms
    bad = _crossings(graph)
    assert not bad, "\n".join(bad)


def test_a_crossing_is_found():
    graph = {"pipelines.stages.prompts": {"pipelines.stages.segment", "pipelines.images"},
             "pipelines.models": {"pipelines.stages.train.driver"},
             "pipelines.stages.train.driver": {"pipelines.local.tracking", "pipelines.registry"},
             "pipelines.stages.tune.sweep": {"pipelines.stages.train.driver"},
             "pipelines.cli": {"pipelines.stages.tune.sweep", "pipelines.local.stack"}}
    assert _crossings(graph) == [
        "pipelines.models (shared) imports pipelines.stages.train.driver (stage:train)",
        "pipelines.stages.prompts (stage:prompts) imports pipelines.stages.segment (stage:segment)",
        "pipelines.stages.train.driver (stage:train) imports pipelines.local.tracking (local)"]


def test_no_module_is_longer_than_400_lines():
    paths = [p for d in ("pixelclip", "pipelines", "tests", "bench") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(paths) > 100
    long = {str(p.relative_to(ROOT)): n for p in paths if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
