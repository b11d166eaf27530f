"""The runtime environment and the container image of `cluster/`: what a job uploads, how tune treats a
submitted job's env, and a Dockerfile whose pins, CUDA base and build context match the project."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.pipelines.test_cluster_manifests import CLUSTER, DOCKERFILE, DOCKERIGNORE, ROOT, _docs, _pins

# -- the runtime environment ------------------------------------------------------------------------------


def _uploaded(excludes: list[str]) -> list[tuple[str, int]]:
    """(path, bytes) of the files Ray would upload from the repository with these excludes
    (.gitignore not applied, so the excludes alone must keep the bulky and secret paths out)."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    out = []

    def handler(p: Path):
        if p.is_file():
            out.append((str(p.relative_to(ROOT)), p.stat().st_size))

    _dir_travel(ROOT, [_get_excludes(ROOT, excludes)], handler, include_gitignore=False)
    return out


def test_runtime_env_uploads_the_code_without_venv_stack_or_outputs():
    (env,) = _docs(CLUSTER / "runtime_env.yaml")
    assert env["working_dir"] == "."
    assert {"AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI"} <= set(env["env_vars"])
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    files = _uploaded(env["excludes"])
    names = {f for f, _ in files}
    assert {"pipelines/cli/__init__.py", "pixelclip/__init__.py", "pyproject.toml"} <= names
    for bad in (".venv/", ".stack/", ".git/", "out/"):
        assert not [f for f in names if f.startswith(bad)], f"{bad} would be uploaded"
    assert sum(s for _, s in files) < 100 * 2**20, "the working_dir upload is over 100 MiB"
    from ray._private.runtime_env.packaging import _get_excludes

    skipped = _get_excludes(ROOT, env["excludes"])  # folders too, whether or not they exist here
    for path in (".venv", ".stack", ".stack/seaweedfs/env.sh", ".git", "out", "run/checkpoint.safetensors"):
        assert skipped(ROOT / path), f"{path} is not excluded"


def test_tune_in_a_submitted_job_leaves_the_job_runtime_env_alone(monkeypatch):
    """Inside `ray job submit` the job's env_vars already reach the trials; a second runtime_env naming
    the same variables is refused by Ray, so `pixelclip tune` passes none there."""
    import ray

    from pipelines import cli

    seen = {}
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setattr("pipelines.stages.tune.sweep.run_tune",
                        lambda job: {"name": job.name, "resumed": False, "trials": [], "best": None})
    args = ["tune", "--data", "s3://d/ready/", "--storage", "s3://d/sweeps", "--name", "s", "--search",
            "prompts.num_clusters=8,16"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    cli.main(args)
    assert seen["runtime_env"]["env_vars"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    cli.main(args)
    assert seen["runtime_env"] is None


# -- the image --------------------------------------------------------------------------------------------


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^\s*ARG\s+([A-Z_]+)=(\S+)", DOCKERFILE.read_text(), re.MULTILINE))


def test_dockerfile_pins_match_pyproject():
    from packaging.specifiers import SpecifierSet

    args, text, pins = _dockerfile_args(), DOCKERFILE.read_text(), _pins()
    assert args["TORCH_VERSION"] == pins["torch"] and args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert args["RAY_VERSION"] == pins["ray"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert args["PYTHON_VERSION"] in SpecifierSet(requires), f"Python {args['PYTHON_VERSION']} vs {requires}"
    assert re.search(r"pip install [^\n]*/app\[pipelines\]", text), "installs the project with its pipelines extra"
    users = re.findall(r"^\s*USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image runs as a non-root user"


def test_dockerfile_cuda_base_matches_the_pinned_torch():
    import torch

    if not torch.version.cuda:
        pytest.skip("this torch is a CPU build: no CUDA version to compare")
    base = re.search(r"nvidia/cuda:(\d+)\.", _dockerfile_args()["CUDA_IMAGE"])
    assert base and base.group(1) == torch.version.cuda.split(".")[0], (base, torch.version.cuda)


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    def rx(p: str) -> re.Pattern:
        out = re.escape(p.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        return re.compile(out.replace(r"\*", "[^/]*").replace(r"\?", "[^/]") + "$")

    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        if any(rx(pat.lstrip("!")).match(q) for q in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_to_what_the_image_copies():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    copied = re.findall(r"^\s*COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for src in (s for line in copied for s in line.split()):
        assert not _docker_ignored(src, patterns), f"COPY {src} is excluded by .dockerignore"
        assert not _docker_ignored(f"{src}/x.py" if (ROOT / src).is_dir() else src, patterns)
    for path in (".stack/seaweedfs/env.sh", ".venv/bin/python", ".git/config", "out/demo/x.png",
                 "pipelines/__pycache__/cli.cpython-311.pyc", "run/checkpoint.safetensors"):
        assert _docker_ignored(path, patterns), f"{path} would be in the build context"
    for path in ("pixelclip/assets/pixelclip-synth-vit.safetensors", "pixelclip/assets/pixelclip-synth-vit.train.json"):
        assert not _docker_ignored(path, patterns), f"{path} (the synth preset's weights) would miss the image"
