"""The deployment files under cluster/ (KubeRay manifests, the Ray cluster-launcher file, the runtime
environment, the image), checked without a cluster or Docker: every YAML document against the fields
its kind needs; no key in any file; every RayJob entrypoint parsed by the real CLI and passed through
the stage's own checks (the stage itself stubbed out); each RayJob cluster holding the GPUs and CPUs its
entrypoint needs; the launcher file against Ray's own schema; the image's pins against pyproject.toml."""

from __future__ import annotations

import functools
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
DOCKERFILE = CLUSTER / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
STAGES = ("prepare", "train", "tune", "evaluate")
YAML_FILES = sorted([*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.yml")])
SECRET_NAME = re.compile(r"SECRET|ACCESS_KEY|SESSION_TOKEN|PASSWORD|AUTH_TOKEN|API_KEY", re.IGNORECASE)
SECRET_TEXT = [
    re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),  # an AWS access key id
    re.compile(r"(?i)secret[_-]?access[_-]?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}"),  # a secret key's value
]


# -- loading ----------------------------------------------------------------------------------------------


@functools.cache
def _docs(path: Path) -> tuple:
    """The non-empty YAML documents of one file."""
    return tuple(d for d in yaml.safe_load_all(path.read_text()) if d is not None)


def _all_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in YAML_FILES for d in _docs(p)]


def _of_kind(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in _all_docs() if d.get("kind") == kind]


def _rayjob(stage: str) -> dict:
    (doc,) = _docs(CLUSTER / "kuberay" / f"rayjob-{stage}.yaml")
    return doc


def _job_cluster(stage: str) -> dict:
    """The RayCluster spec a stage's RayJob runs on: its own, or the one its clusterSelector names."""
    spec = _rayjob(stage)["spec"]
    if "rayClusterSpec" in spec:
        return spec["rayClusterSpec"]
    name = spec["clusterSelector"]["ray.io/cluster"]
    return next(d["spec"] for _, d in _of_kind("RayCluster") if d["metadata"]["name"] == name)


@functools.cache
def _pins() -> dict[str, str]:
    """`name==version` pins of pyproject.toml's dependencies and `pipelines` extra, extras stripped."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for req in [*project["dependencies"], *project["optional-dependencies"]["pipelines"]]:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([^\s;,]+)", req)
        if m:
            pins[m.group(1).lower()] = m.group(3)
    return pins


# -- Kubernetes helpers -----------------------------------------------------------------------------------


def _cpus(q) -> float:
    """A Kubernetes CPU quantity ("16", "500m", 2) in cores."""
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _dns1035(name: str, limit: int) -> bool:
    return len(name) <= limit and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) is not None


def _containers(spec: dict) -> list[dict]:
    """Every container of a RayCluster spec: head, then each worker group's."""
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _check_cluster_spec(spec: dict, where: str) -> dict:
    """The fields a RayCluster spec needs; returns {"cpu"/"gpu": (at start, at most)} over the workers."""
    head = spec["headGroupSpec"]
    assert isinstance(head.get("rayStartParams"), dict), f"{where}: headGroupSpec.rayStartParams"
    assert str(head["rayStartParams"].get("num-cpus")) == "0", f"{where}: the head must schedule nothing (num-cpus 0)"
    assert head["template"]["spec"]["containers"][0].get("image"), f"{where}: head image"
    assert spec.get("rayVersion") == _pins()["ray"], f"{where}: rayVersion must be the pinned ray {_pins()['ray']}"
    autoscaling = spec.get("enableInTreeAutoscaling", False)
    groups = spec.get("workerGroupSpecs") or []
    assert groups, f"{where}: no workerGroupSpecs"
    names = [g.get("groupName") for g in groups]
    assert all(names) and len(set(names)) == len(names), f"{where}: groupName missing or repeated: {names}"
    total = {"cpu": [0.0, 0.0], "gpu": [0, 0]}
    for g in groups:
        at = f"{where}: group {g['groupName']}"
        lo, n, hi = (g.get(k) for k in ("minReplicas", "replicas", "maxReplicas"))
        assert all(isinstance(v, int) for v in (lo, n, hi)), f"{at}: replicas, minReplicas, maxReplicas must be ints"
        assert 0 <= lo <= n <= hi and hi >= 1, f"{at}: needs 0 <= minReplicas {lo} <= replicas {n} <= maxReplicas {hi}"
        assert isinstance(g.get("rayStartParams"), dict), f"{at}: rayStartParams"
        c = g["template"]["spec"]["containers"][0]
        assert c.get("image"), f"{at}: image"
        limits = (c.get("resources") or {}).get("limits") or {}
        assert "cpu" in limits and "memory" in limits, f"{at}: container resources.limits need cpu and memory"
        gpus = int(limits.get("nvidia.com/gpu", 0))
        requests = c["resources"].get("requests") or {}
        assert int(requests.get("nvidia.com/gpu", gpus)) == gpus, f"{at}: GPU requests must equal limits"
        start = lo if autoscaling else n
        total["cpu"][0] += start * _cpus(limits["cpu"])
        total["cpu"][1] += (hi if autoscaling else n) * _cpus(limits["cpu"])
        total["gpu"][0] += start * gpus
        total["gpu"][1] += (hi if autoscaling else n) * gpus
    return {k: tuple(v) for k, v in total.items()}


def _env_problems(container: dict) -> list[str]:
    """What is missing from a container's environment: endpoint, MLflow URI, keys from a Secret."""
    env = {e["name"]: e for e in container.get("env") or []}
    problems = [n for n in ("AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI") if n not in env]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if "secretKeyRef" not in (env.get(key) or {}).get("valueFrom", {}):
            problems.append(f"{key} from a secretKeyRef")
    return problems


# -- secrets ----------------------------------------------------------------------------------------------


def _secret_findings(node, where: str = "") -> list[str]:
    """Literal secrets in a parsed YAML tree (runtimeEnvYAML strings are parsed and searched too)."""
    out = []
    if isinstance(node, dict):
        name = node.get("name")
        if isinstance(name, str) and SECRET_NAME.search(name) and node.get("value") not in (None, ""):
            out.append(f"{where}: {name} has a literal value; use valueFrom.secretKeyRef")
        for k, v in node.items():
            if isinstance(k, str) and SECRET_NAME.search(k) and isinstance(v, str | int | float) and str(v):
                out.append(f"{where}.{k}: a literal secret")
            if k == "runtimeEnvYAML" and isinstance(v, str):
                out += _secret_findings(yaml.safe_load(v), f"{where}.runtimeEnvYAML")
            else:
                out += _secret_findings(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _secret_findings(v, f"{where}[{i}]")
    elif isinstance(node, str):
        m = re.search(r"\b([A-Z0-9_]+)=(\S+)", node)
        if m and SECRET_NAME.search(m.group(1)) and not m.group(2).startswith(("$", "...")):
            out.append(f"{where}: {m.group(1)}= with a literal value")
    return out


def _text_findings(text: str) -> list[str]:
    return [m.group(0)[:12] + "..." for rx in SECRET_TEXT for m in rx.finditer(text)]


def test_secret_checks_catch_planted_keys():
    assert _secret_findings({"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"}]})
    assert _secret_findings({"data": {"AWS_SECRET_ACCESS_KEY": "abc"}})
    assert _secret_findings({"runtimeEnvYAML": "env_vars:\n  AWS_ACCESS_KEY_ID: abc\n"})
    assert _secret_findings({"run_options": ["--env AWS_SECRET_ACCESS_KEY=abc"]})
    assert _text_findings("key: AKIAABCDEFGHIJKLMNOP") and _text_findings("aws_secret_access_key = " + "a" * 40)
    ref = {"name": "AWS_SECRET_ACCESS_KEY",
           "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}}
    assert not _secret_findings({"env": [ref]})


@pytest.mark.parametrize("path", [*YAML_FILES, DOCKERFILE, DOCKERIGNORE, CLUSTER / "README.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_literal_secrets(path):
    assert not _text_findings(path.read_text()), f"{path}: something that looks like an AWS key"
    if path.suffix in (".yaml", ".yml"):
        for doc in _docs(path):
            assert not _secret_findings(doc, path.name)
    if path == DOCKERFILE:
        names = re.findall(r"^\s*(?:ENV|ARG)\s+([A-Za-z0-9_]+)", path.read_text(), re.MULTILINE)
        assert not [n for n in names if SECRET_NAME.search(n)], "no credentials may be built into the image"


# -- every YAML file, and the ones this directory must have -----------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses_into_mappings(path):
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs), path


def test_the_expected_manifests_exist():
    assert "pixelclip" in [d["metadata"]["name"] for _, d in _of_kind("RayCluster")]
    for stage in STAGES:
        assert _rayjob(stage)["kind"] == "RayJob"
    assert _docs(CLUSTER / "launcher" / "gpu-cluster.yaml")[0]["cluster_name"]
    assert _docs(CLUSTER / "runtime_env.yaml")[0]["working_dir"] == "."


def test_the_configmap_names_the_services():
    (path, cm), = [(p, d) for p, d in _of_kind("ConfigMap") if d["metadata"]["name"] == "pixelclip-env"]
    assert cm["apiVersion"] == "v1" and {"AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI"} <= set(cm["data"]), path
    assert all(isinstance(v, str) for v in cm["data"].values()), "ConfigMap data values must be strings"


# -- KubeRay ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, rc", [pytest.param(p, d, id=p.name) for p, d in _of_kind("RayCluster")])
def test_raycluster_head_cpu_and_gpu_groups_and_autoscaling(path, rc):
    assert rc["apiVersion"] == "ray.io/v1" and _dns1035(rc["metadata"]["name"], 53)
    spec = rc["spec"]
    assert spec.get("enableInTreeAutoscaling") is True, "autoscaling between minReplicas and maxReplicas"
    res = _check_cluster_spec(spec, path.name)
    gpu_of = {g["groupName"]: int(g["template"]["spec"]["containers"][0]["resources"]["limits"]
                                  .get("nvidia.com/gpu", 0)) for g in spec["workerGroupSpecs"]}
    assert any(v == 0 for v in gpu_of.values()), f"a CPU-only group for Ray Data: {gpu_of}"
    assert any(v > 0 for v in gpu_of.values()), f"a GPU group (nvidia.com/gpu): {gpu_of}"
    assert res["gpu"][0] >= 1, "the stages use GPUs only if the cluster has some when they start"
    for c in _containers(spec):
        assert not _env_problems(c), f"{c['name']}: {_env_problems(c)}"


@pytest.mark.parametrize("stage", STAGES)
def test_rayjob_fields(stage):
    job = _rayjob(stage)
    where = f"rayjob-{stage}.yaml"
    assert job["apiVersion"] == "ray.io/v1" and _dns1035(job["metadata"]["name"], 47), where
    spec = job["spec"]
    assert isinstance(spec.get("entrypoint"), str) and spec["entrypoint"].strip(), f"{where}: entrypoint"
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), f"{where}: rayClusterSpec or clusterSelector"
    assert isinstance(spec.get("shutdownAfterJobFinishes"), bool), f"{where}: shutdownAfterJobFinishes"
    if "rayClusterSpec" in spec:
        assert spec["shutdownAfterJobFinishes"], f"{where}: delete the job's cluster (and its GPUs) when it ends"
        _check_cluster_spec(spec["rayClusterSpec"], where)
        for c in _containers(spec["rayClusterSpec"]):
            assert not _env_problems(c), f"{where}: {c['name']}: {_env_problems(c)}"
    else:
        clusters = {d["metadata"]["name"] for _, d in _of_kind("RayCluster")}
        assert spec["clusterSelector"].get("ray.io/cluster") in clusters, f"{where}: selects no RayCluster"
    runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML", "")) or {}
    assert isinstance(runtime_env, dict), f"{where}: runtimeEnvYAML must be a mapping"
    wd = runtime_env.get("working_dir")
    assert wd is None or re.match(r"^(s3|gs|https?)://", wd), f"{where}: the submitter has no checkout: {wd}"
    assert all(isinstance(v, str) for v in runtime_env.get("env_vars", {}).values()), "env_vars values are strings"


# -- entrypoints: the real CLI, the stage's own checks, the cluster it gets ------------------------------


class _Reached(Exception):
    """The CLI got as far as running the stage."""

    def __init__(self, job):
        super().__init__(job)
        self.job = job


@pytest.fixture
def dry_cli(monkeypatch, capsys):
    """`run(argv)`: `pipelines.cli.main(argv)` with ray.init and the stage runners stubbed out; returns the
    validated job the stage would have run, or fails with the CLI's own error message."""
    import ray

    from pipelines.cli import main
    from pipelines.stages import prepare
    from pipelines.stages.evaluate import job as evaluate
    from pipelines.stages.train import driver as train
    from pipelines.stages.tune import sweep as tune

    def reached(job, *args, **kwargs):  # the CLI validated the job already
        raise _Reached(job)

    monkeypatch.setattr(ray, "init", lambda *a, **k: None)
    for module, name in ((prepare, "run_prepare"), (train, "run_train"), (tune, "run_tune"),
                         (evaluate, "run_evaluate")):
        monkeypatch.setattr(module, name, reached)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")  # the cluster's (config.yaml)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)

    def run(argv: list[str]):
        try:
            main(argv)
        except _Reached as r:
            return r.job
        except SystemExit as e:
            pytest.fail(f"pixelclip {' '.join(argv)} exited {e.code}: {capsys.readouterr().err.strip()}")
        pytest.fail(f"pixelclip {' '.join(argv)} returned without running its stage")

    return run


def _cli_argv(entrypoint: str) -> list[str]:
    """The arguments after `python -m pipelines.cli` (or `pixelclip`) in an entrypoint."""
    words = shlex.split(entrypoint)
    for i, w in enumerate(words):
        if w == "pixelclip":
            return words[i + 1:]
        if re.fullmatch(r"python[0-9.]*", w) and words[i + 1:i + 3] == ["-m", "pipelines.cli"]:
            return words[i + 3:]
    raise AssertionError(f"no `python -m pipelines.cli ...` in {entrypoint!r}")


@pytest.mark.parametrize("stage", STAGES)
def test_rayjob_entrypoint_is_a_valid_cli_command_for_its_cluster(stage, dry_cli):
    argv = _cli_argv(_rayjob(stage)["spec"]["entrypoint"])
    assert argv[0] == stage, f"rayjob-{stage}.yaml runs `{argv[0]}`"
    job = dry_cli(argv)
    (gpu_start, gpu_max), (cpu_start, _) = (_check_cluster_spec(_job_cluster(stage), stage)[k]
                                             for k in ("gpu", "cpu"))
    if stage == "prepare":
        assert gpu_start >= (job.source != "sa1b"), "--source dino/sam uses GPUs only if there are some at start"
        assert job.sample == 0.05, "the paper's 5% of SA-1B"
    if stage in ("train", "tune"):
        t = job.train if stage == "tune" else job
        assert gpu_start >= 1 and gpu_max >= t.workers, f"{t.workers} GPU workers; GPUs {gpu_start}..{gpu_max}"
        assert t.workers * t.cpus_per_worker < cpu_start, "no CPU left for Ray Data (the stage refuses)"
        assert t.model.backbone.name == "ViT-B-16-quickgelu", "the paper's ViT-B/16 recipe, with QuickGELU"
    if stage == "train":
        assert gpu_start >= job.workers, "a fixed gang of one GPU per DDP worker"
    if stage == "tune":
        assert {"prompts.num_clusters", "prompts.length"} <= set(job.search), "the paper's K and l sweep"
        assert gpu_max >= job.train.workers * (job.max_concurrent or 1), "--max-concurrent trials x --workers GPUs"
    if stage == "evaluate":
        from pixelclip.eval.datasets import BENCHMARKS

        assert set(job.benchmarks) == set(BENCHMARKS), "the five benchmarks"
        assert gpu_start >= 1 and gpu_max >= (job.concurrency or 1), "one GPU per inference actor"


def test_rayjobs_run_one_image():
    images = {c["image"] for _, d in _of_kind("RayCluster") for c in _containers(d["spec"])}
    for stage in STAGES:
        images |= {c["image"] for c in _containers(_job_cluster(stage))}
    images.add(_docs(CLUSTER / "launcher" / "gpu-cluster.yaml")[0]["docker"]["image"])
    assert len(images) == 1, f"one image everywhere, got {images}"


# -- the cluster launcher ---------------------------------------------------------------------------------


def test_launcher_config():
    (cfg,) = _docs(CLUSTER / "launcher" / "gpu-cluster.yaml")
    assert cfg["cluster_name"] and cfg["provider"]["type"] and cfg["provider"].get("region")
    types, top = cfg["available_node_types"], cfg["max_workers"]
    assert cfg["head_node_type"] in types
    assert types[cfg["head_node_type"]]["resources"].get("CPU") == 0, "nothing scheduled on the head"
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= top, f"{name}: min_workers <= max_workers <= {top}"
    assert sum(t["min_workers"] for t in workers.values()) <= top
    assert any(t["resources"].get("GPU", 0) >= 1 and t["min_workers"] >= 1 for t in workers.values()), \
        "a GPU node type with at least one node up (the stages pick GPUs at start)"
    for name, t in types.items():  # Ray's default AMI (Ubuntu 18.04) has no driver for CUDA 13
        assert t["node_config"].get("ImageId"), f"{name}: ImageId"
    assert cfg["docker"]["image"]


def test_launcher_config_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_docs(CLUSTER / "launcher" / "gpu-cluster.yaml")[0]))
