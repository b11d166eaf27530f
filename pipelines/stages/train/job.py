"""The training job's configuration tree: what `pixelclip train` runs, what every trial of a sweep
runs, and what each worker loop receives.

    train:                        TrainJobConfig
      model:                      pixelclip.Config (a preset name, a YAML file, or its fields)
      validation:                 ValidationConfig, or null (no validation while training)
      masks:                      OnlineMasksConfig (stored: the records' own masks; dino: per crop)

A job comes from a YAML file (`pixelclip train --job train.yaml`), flags and dotted `--set`
overrides (`pixelclip.typed.load`); every error is a `ConfigError` that names the field
(`train.validation.every must be >= 1, got 0`). `pixelclip config --job train` prints every knob.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pixelclip.config import Config
from pixelclip.data.masks import DINO_ARCH
from pixelclip.typed import ConfigError, build, check

MASK_SOURCES = ("stored", "dino")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_SPREAD")


@dataclass
class ValidationConfig:
    benchmark: str  # a benchmark name (pixelclip.eval.datasets.BENCHMARKS), e.g. ade20k-150
    root: str  # its root: a folder or an s3:// prefix
    every: int = 100  # steps between validations (also at step 0 and at the last step)
    limit: int | None = 64  # the first N images; None: all
    split: str = "val"
    class_names: list[str] | str | None = None  # the split's own classes: a list, or a file (one per line)
    mode: str = "maskclip"  # dense readout (pixelclip.model.backbone.DENSE_MODES)
    templates: str = "single"  # "single" or "ensemble" (pipelines.models.TEMPLATES)
    groups: dict[str, list[str]] = field(default_factory=dict)  # name -> classes: also their mIoU

    def validate(self, p: str = "train.validation") -> ValidationConfig:
        from pipelines.models import TEMPLATES
        from pixelclip.eval.datasets import BENCHMARKS
        from pixelclip.model.backbone import DENSE_MODES

        check(self.benchmark in BENCHMARKS, f"{p}.benchmark", f"must be one of {', '.join(BENCHMARKS)}",
              self.benchmark)
        check(bool(self.root), f"{p}.root", "must be the benchmark's folder or s3:// prefix", self.root)
        check(self.every >= 1, f"{p}.every", "must be >= 1", self.every)
        check(self.limit is None or self.limit >= 1, f"{p}.limit", "must be >= 1 or null", self.limit)
        check(self.mode in DENSE_MODES, f"{p}.mode", f"must be one of {', '.join(DENSE_MODES)}", self.mode)
        check(self.templates in TEMPLATES, f"{p}.templates", f"must be one of {', '.join(TEMPLATES)}",
              self.templates)
        for name in self.groups:
            check(name.replace("_", "").isalnum(), f"{p}.groups",
                  "names must be letters, digits and '_' (each names the metric val_miou_<group>)", name)
        return self


@dataclass
class OnlineMasksConfig:
    source: str = "stored"  # "stored": the records' own masks; "dino": DINO k-means on each training crop
    weights: str | None = None  # DINO ViT-S/16 weights (official .pth or timm safetensors): local or s3://
    arch: str = DINO_ARCH  # timm architecture of the weights; "tiny": a small random ViT (tests only)
    k: int = 16  # k-means clusters per crop (the authors: 16)
    actors: int | None = None  # DINO actors; default: one per training worker
    gpus_per_actor: float = 0.25  # GPU clusters: each actor's share of a GPU; the workers take the rest of theirs
    cpus_per_actor: float = 1.0
    batch_size: int = 8  # crops per DINO call
    allow_random_weights: bool = False  # tests and demos only: masks from an untrained DINO

    def validate(self, p: str = "train.masks") -> OnlineMasksConfig:
        check(self.source in MASK_SOURCES, f"{p}.source", f"must be one of {', '.join(MASK_SOURCES)}", self.source)
        if self.source == "dino" and not self.weights and not self.allow_random_weights:
            raise ConfigError(f"{p}.weights is required with masks from DINO (--dino-weights; "
                              "--allow-random-weights only for tests)")
        check(self.k >= 2, f"{p}.k", "must be >= 2", self.k)
        check(0 < self.gpus_per_actor < 1, f"{p}.gpus_per_actor", "must be in (0, 1)", self.gpus_per_actor)
        check(self.actors is None or self.actors >= 1, f"{p}.actors", "must be >= 1", self.actors)
        check(self.cpus_per_actor > 0, f"{p}.cpus_per_actor", "must be > 0", self.cpus_per_actor)
        check(self.batch_size >= 1, f"{p}.batch_size", "must be >= 1", self.batch_size)
        return self


@dataclass
class TrainJobConfig:
    data: str = ""  # training-ready shards (s3:// or a folder); required
    storage: str = ""  # where runs and checkpoints live (s3:// or a folder); required
    name: str = ""  # run name: the same name resumes the run; required
    model: Config = field(default_factory=Config)  # the pixelclip configuration: a preset name or YAML file
    #   (`model: tiny`), or its fields, optionally on top of one (`model: {preset: tiny, optim: {steps: 50}}`)
    workers: int = 2
    cpus_per_worker: float = 1.0  # leave CPUs free for Ray Data, which feeds the workers
    use_gpu: bool | None = None  # None: GPUs when the cluster has them
    checkpoint_every: int = 100
    log_every: int = 10
    max_failures: int = 2  # worker-group restarts (Ray Train) before the run fails
    placement: str = "PACK"  # Ray placement of the workers: PACK, SPREAD, or STRICT_SPREAD (one per node, so that
    #   losing a node costs one worker)
    seed: int | None = None  # augmentation seed; None draws fresh views every epoch
    tracking_uri: str | None = None  # MLflow server; default: MLFLOW_TRACKING_URI; None and unset: no tracking
    experiment: str = "pixelclip"  # the MLflow experiment
    register_as: str | None = None  # register the final model under this name in the MLflow registry
    parent_run_id: str | None = None  # MLflow parent run (a sweep's); the run becomes its child
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags of the run
    validation: ValidationConfig | None = None  # zero-shot mIoU while training (metric val_miou); null: none
    precision: str = "bf16"  # on GPUs: "bf16" autocast for the encoders and the decoder (clustering stays
    #   fp32/fp64), or "fp32" as the authors trained; CPUs always run fp32
    masks: OnlineMasksConfig = field(default_factory=OnlineMasksConfig)  # where the masks come from

    SHORTHAND = ("model",)  # `--set optim.steps=50` is `--set model.optim.steps=50`

    def __post_init__(self):  # Python callers may pass plain mappings for the sections
        if not isinstance(self.model, Config):
            self.model = Config.from_mapping(self.model, "train.model")
        if isinstance(self.validation, dict):
            self.validation = build(ValidationConfig, self.validation, "train.validation")
        if self.masks is None:
            self.masks = OnlineMasksConfig()
        elif isinstance(self.masks, dict):
            self.masks = build(OnlineMasksConfig, self.masks, "train.masks")

    def validate(self, p: str = "train") -> TrainJobConfig:
        for name in ("data", "storage"):
            check(bool(getattr(self, name)), f"{p}.{name}", "is required (s3:// or a folder)", getattr(self, name))
        check(bool(self.name) and "/" not in self.name, f"{p}.name", "must be a non-empty name without '/'",
              self.name)
        self.model.validate(f"{p}.model.")
        check(self.workers >= 1, f"{p}.workers", "must be >= 1", self.workers)
        batch = self.model.optim.batch_size
        if batch % self.workers:
            raise ConfigError(f"{p}.model.optim.batch_size {batch} must be divisible by {p}.workers "
                              f"{self.workers} (each worker takes an equal share of the global batch)")
        check(self.cpus_per_worker > 0, f"{p}.cpus_per_worker", "must be > 0", self.cpus_per_worker)
        for n in ("checkpoint_every", "log_every"):
            check(getattr(self, n) >= 1, f"{p}.{n}", "must be >= 1", getattr(self, n))
        check(self.max_failures >= 0, f"{p}.max_failures", "must be >= 0", self.max_failures)
        check(self.placement in PLACEMENTS, f"{p}.placement", f"must be one of {', '.join(PLACEMENTS)}",
              self.placement)
        check(self.precision in ("bf16", "fp32"), f"{p}.precision", "must be bf16 or fp32", self.precision)
        if self.validation is not None:
            self.validation.validate(f"{p}.validation")
        self.masks.validate(f"{p}.masks")
        return self


@dataclass
class LoopConfig:
    """What each Ray Train worker loop receives (`train_loop_config={"loop": LoopConfig}`)."""

    model: Config  # with the weights' path as the driver checked it
    data: str
    run_uri: str  # the run's folder in storage (checkpoints, pending metrics)
    log_every: int
    checkpoint_every: int
    precision: str
    validation: ValidationConfig | None = None
    tracking_uri: str | None = None
    run_id: str | None = None  # the MLflow run; None: no tracking
