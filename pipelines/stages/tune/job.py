"""The sweep's configuration: a training job that every trial runs with its own values, and how the
sweep searches, stops and selects.

    tune:                 TuneJobConfig
      train:              TrainJobConfig (pipelines.stages.train.job): data, model, workers per trial, ...;
                          its `name` and `storage` are set per trial (NAME-<trial id> under STORAGE/NAME/runs)
      search, variants:   what the trials vary

`pixelclip tune --job sweep.yaml --set train.workers=1 --set prompts.num_clusters=16` (a field of the
training job or of its model may drop the `train.` and `train.model.` in front);
`pixelclip config --job tune` prints every knob.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pipelines import storage
from pipelines.stages.train.job import TrainJobConfig
from pixelclip.config import config_from_dict
from pixelclip.typed import ConfigError, check, merge_dicts, parse_override

VARIANT = "variant"  # the search-space key of the named variants
DIST = re.compile(r"^(uniform|loguniform|randint)\(\s*([^,]+?)\s*,\s*([^,]+?)\s*\)$")


@dataclass
class TuneJobConfig:
    name: str = ""  # sweep name: the same name resumes the sweep; required
    storage: str = ""  # where sweeps live (s3:// or a folder); required
    train: TrainJobConfig = field(default_factory=TrainJobConfig)  # the training job of every trial
    search: dict = field(default_factory=dict)  # dotted model field -> list of values (a grid), or
    #   "uniform(a,b)" / "loguniform(a,b)" / "randint(a,b)" (num_samples draws)
    variants: dict[str, list[str]] = field(default_factory=dict)  # name -> ["section.field=value", ...]: a grid
    #   over named configurations (an ablation table), crossed with `search`
    num_samples: int = 1  # draws of the distributions (a grid is repeated this many times)
    metric: str = "loss_rel"  # the reported metric that selects trials (val_miou with train.validation)
    mode: str = "min"  # min or max: whether `metric` is better low or high
    scheduler: str = "asha"  # "asha" or "fifo" (every trial runs to the end)
    grace_period: int | None = None  # steps before ASHA may stop a trial; default: a quarter of the steps
    reduction_factor: float = 2.0  # ASHA keeps 1 / this of the trials at each rung
    max_concurrent: int | None = None  # trials at once; default: as many as the cluster's CPUs / GPUs fit
    max_failures: int = 1  # Tune's restarts of a failed trial, on top of train.max_failures worker restarts
    register_as: str | None = None  # register the best trial's model under this name
    alias: str = "candidate"  # ...and point this alias at it

    SHORTHAND = ("train",)  # `--set workers=1` is `--set train.workers=1` (and `optim.steps` train.model's)

    def __post_init__(self):
        if isinstance(self.train, dict):
            self.train = TrainJobConfig(**self.train)

    @property
    def steps(self) -> int:
        return self.train.model.optim.steps

    def validate(self, p: str = "tune") -> TuneJobConfig:
        check(bool(self.name) and "/" not in self.name, f"{p}.name", "must be a non-empty name without '/'",
              self.name)
        check(bool(self.storage), f"{p}.storage", "is required (s3:// or a folder)", self.storage)
        for per_trial in ("name", "storage"):
            check(not getattr(self.train, per_trial), f"{p}.train.{per_trial}",
                  f"is set per trial (from {p}.name and {p}.storage); leave it empty", getattr(self.train, per_trial))
        check(self.train.register_as is None, f"{p}.train.register_as",
              f"is not for trials: {p}.register_as registers the best", self.train.register_as)
        if not self.search and not self.variants:
            raise ConfigError(f"{p}.search is empty: give at least one field to search, "
                              "e.g. prompts.num_clusters=16,32,64 (or named variants)")
        check(VARIANT not in self.search, f"{p}.search", f"must not hold {VARIANT!r}, the variants' grid "
              "(give variants instead)", sorted(self.search))
        base = self.train.model.to_dict()
        for name, items in self.variants.items():
            try:
                config_from_dict(variant_model(base, items))
            except ValueError as e:
                raise ConfigError(f"{p}.variants.{name}: {e}") from None
        check(self.mode in ("min", "max"), f"{p}.mode", "must be 'min' or 'max'", self.mode)
        check(self.scheduler in ("asha", "fifo"), f"{p}.scheduler", "must be 'asha' or 'fifo'", self.scheduler)
        check(self.num_samples >= 1, f"{p}.num_samples", "must be >= 1", self.num_samples)
        check(self.reduction_factor > 1, f"{p}.reduction_factor", "must be > 1", self.reduction_factor)
        check(self.max_failures >= 0, f"{p}.max_failures", "must be >= 0", self.max_failures)
        check(self.grace_period is None or 1 <= self.grace_period <= self.steps, f"{p}.grace_period",
              f"must be in [1, optim.steps={self.steps}]", self.grace_period)
        for key, values in self.search.items():
            for v in candidates(key, values):  # every value must make a valid configuration
                try:
                    config_from_dict(with_field(base, key, v))
                except ValueError as e:
                    raise ConfigError(f"{p}.search.{key}: {e}") from None
        if self.register_as and not (self.train.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
            raise ConfigError(f"{p}.register_as needs an MLflow server: set {p}.train.tracking_uri or "
                              "MLFLOW_TRACKING_URI")
        self.trial_job({})  # the trials' training jobs are valid
        return self

    def trial_job(self, overrides: dict, trial_id: str = "check", parent_run_id: str | None = None
                  ) -> TrainJobConfig:
        """The training job of one trial: the sweep's training job with the trial's values, its own
        name and folder, and the sweep's tags."""
        overrides = dict(overrides)
        variant = overrides.pop(VARIANT, None)
        model = variant_model(self.train.model.to_dict(), self.variants.get(variant, []))
        for key, value in overrides.items():
            model = with_field(model, key, value)
        tags = {**self.train.tags, "pixelclip.sweep": self.name, "pixelclip.trial": trial_id}
        if variant is not None:
            tags["pixelclip.variant"] = variant
        return dataclasses.replace(
            self.train, storage=storage.join(self.storage, self.name, "runs"), name=f"{self.name}-{trial_id}",
            model=config_from_dict(model), parent_run_id=parent_run_id, tags=tags,
        ).validate("tune.train")


def parse_search(items: list[str]) -> dict:
    """`["prompts.num_clusters=8,16", "cluster.epsilon=loguniform(0.01,0.1)"]` -> a search dict."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--search {item!r} must look like section.field=a,b,c or section.field=uniform(a,b)")
        key, raw = (s.strip() for s in item.split("=", 1))
        if DIST.match(raw):
            out[key] = raw
        else:
            out[key] = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
            if not out[key]:
                raise ConfigError(f"--search {item!r} gives no value for {key}")
    return out


def parse_variant(item: str) -> tuple[str, list[str]]:
    """`"no-momentum: momentum.gamma=0; cluster.epsilon=0.1"` -> ("no-momentum", [overrides])."""
    name, sep, rest = item.partition(":")
    if not sep or not name.strip():
        raise ConfigError(f"--variant {item!r} must look like NAME: section.field=value; section.field=value")
    return name.strip(), [o.strip() for o in rest.split(";") if o.strip()]


def with_field(model: dict, key: str, value: Any) -> dict:
    """`model` with the dotted field `key` set to `value`."""
    nested: dict = {key.split(".")[-1]: value}
    for part in reversed(key.split(".")[:-1]):
        nested = {part: nested}
    return merge_dicts(model, nested)


def variant_model(model: dict, items: list[str]) -> dict:
    """`model` with a variant's `section.field=value` overrides."""
    for item in items:
        model = merge_dicts(model, parse_override(item))
    return model


def candidates(key: str, values: Any) -> list:
    """Values to check a search entry with: the list itself, or a distribution's two bounds."""
    if isinstance(values, list):
        return values
    m = DIST.match(str(values))
    if not m:
        raise ConfigError(f"tune.search.{key}: expected a list of values or uniform(a,b) / loguniform(a,b) / "
                          f"randint(a,b), got {values!r}")
    lo, hi = float(m.group(2)), float(m.group(3))
    if not lo < hi or (m.group(1) == "loguniform" and lo <= 0):
        raise ConfigError(f"tune.search.{key}: bounds of {values!r} must satisfy 0 < a < b for loguniform, "
                          "a < b else")
    return [int(lo), int(hi) - 1] if m.group(1) == "randint" else [lo, hi]
