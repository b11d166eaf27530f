"""The application's job-configuration tree: prepare, train, tune (which holds a train job),
evaluate, validation; read from YAML, the flags given and dotted `--set`; errors that name the field;
`pixelclip config --job KIND` lists every knob."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from pipelines.cli import parse
from pipelines.cli.jobs import KINDS, job_class
from pipelines.stages.train.job import TrainJobConfig
from pipelines.stages.tune.job import TuneJobConfig
from pixelclip.typed import ConfigError, describe, load


def _job(argv: list[str]):
    from pipelines.cli import command

    args = parse(argv)
    return command(args.command).job_from(args)


def _yaml(tmp_path, data: dict):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_train_job_from_a_file_then_the_given_flags_then_set(tmp_path):
    f = _yaml(tmp_path, {"data": "s3://d/", "storage": "s3://r", "name": "from-file", "workers": 4,
                         "model": {"preset": "tiny", "optim": {"steps": 30, "batch_size": 8}},
                         "validation": {"benchmark": "ade20k-150", "root": "s3://eval", "every": 10},
                         "tags": {"team": "seg"}})
    job = _job(["train", "--job", f])
    assert isinstance(job, TrainJobConfig) and job.workers == 4 and job.model.optim.steps == 30
    assert job.model.backbone.name == "pixelclip-tiny-vit"  # the file's preset, not the default's
    assert job.validation.every == 10 and job.validation.limit == 64 and job.tags == {"team": "seg"}
    # a flag given on the command line wins over the file; a flag left at its default does not
    job = _job(["train", "--job", f, "--name", "flag", "--log-every", "5", "--set", "optim.steps=40",
                "--set", "model.prompts.length=2", "--set", "workers=2", "--set", "validation.every=20"])
    assert (job.name, job.workers, job.log_every, job.checkpoint_every) == ("flag", 2, 5, 100)
    assert job.model.optim.steps == 40 and job.model.prompts.length == 2 and job.validation.every == 20
    assert job.validation.benchmark == "ade20k-150"  # the file's, kept


def test_flags_alone_give_the_same_job_as_before(tmp_path):
    job = _job(["train", "--data", "s3://d/", "--storage", "s3://r", "--name", "n", "--set", "optim.batch_size=4",
                "--masks", "dino", "--allow-random-weights", "--dino-k", "8"])
    assert job.model.backbone.name == "pixelclip-tiny-vit"  # no --preset, no file: tiny
    assert job.masks.source == "dino" and job.masks.k == 8 and job.masks.allow_random_weights
    assert job.validation is None and job.max_failures == 2


@pytest.mark.parametrize("argv, message", [
    (["train", "--storage", "s3://r", "--name", "n"], r"train\.data is required"),
    (["train", "--data", "d", "--storage", "s", "--name", "n", "--set", "workers=0"], r"train\.workers must be >= 1"),
    (["train", "--data", "d", "--storage", "s", "--name", "n", "--set", "optim.stepz=3"],
     r"optim\.stepz is not a field"),
    (["train", "--data", "d", "--storage", "s", "--name", "n", "--set", "optim.steps=0"],
     r"train\.model\.optim\.steps must be >= 1"),
    (["train", "--data", "d", "--storage", "s", "--name", "n", "--validate", "ade20k-150=s3://e",
      "--validate-every", "0"], r"train\.validation\.every must be >= 1"),
    (["tune", "--data", "d", "--storage", "s", "--name", "n", "--search", "prompts.length=2,4",
      "--set", "train.workers=3"], r"batch_size 4 must be divisible by tune\.train\.workers 3"),
    (["tune", "--data", "d", "--storage", "s", "--name", "n", "--search", "prompts.length=2,4",
      "--set", "train.name=x"], r"tune\.train\.name is set per trial"),
    (["prepare", "--input", "i", "-o", "o", "--set", "convert.short_side=4"],
     r"prepare\.convert\.short_side must be >= 8"),
    (["prepare", "--input", "i", "-o", "o", "--set", "sam_options.points_per_side=16", "--set", "dino_k=1"],
     r"prepare\.dino_k must be >= 2"),
    (["evaluate", "--model", "openclip:ViT-B-16:openai", "--benchmark", "voc-20=/d", "--set", "limit=0"],
     r"evaluate\.limit must be >= 1"),
    (["evaluate", "--benchmark", "voc-20=/d"], r"evaluate\.model is required"),
])
def test_every_error_names_the_field(argv, message):
    with pytest.raises(ConfigError, match=message):
        _job(argv)


def test_tune_holds_a_train_job_and_passes_it_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    f = _yaml(tmp_path, {"name": "k", "storage": "s3://s", "search": {"prompts.num_clusters": [4, 8]},
                         "max_failures": 3, "register_as": "m",
                         "train": {"data": "s3://d/", "max_failures": 5, "workers": 1, "seed": 7,
                                   "model": {"preset": "tiny", "optim": {"steps": 12, "batch_size": 4}}}})
    job = _job(["tune", "--job", f, "--set", "prompts.length=2", "--metric-mode", "max"])
    assert isinstance(job, TuneJobConfig) and job.mode == "max" and job.max_failures == 3
    trial = job.trial_job({"prompts.num_clusters": 8}, "t1", "parent")
    # every training field reaches the trial (max_failures is the trial's worker restarts, not Tune's)
    assert (trial.max_failures, trial.workers, trial.seed, trial.data) == (5, 1, 7, "s3://d/")
    assert trial.model.prompts.num_clusters == 8 and trial.model.prompts.length == 2
    assert trial.name == "k-t1" and trial.storage == "s3://s/k/runs" and trial.register_as is None
    # the flag-only sweep: the training flags land in tune.train
    job = _job(["tune", "--data", "s3://d/", "--storage", "s3://s", "--name", "k", "--workers", "1",
                "--search", "prompts.length=2,4", "--set", "optim.batch_size=4", "--max-failures", "0"])
    assert job.train.workers == 1 and job.max_failures == 0 and job.train.max_failures == 2


def test_flag_defaults_are_the_jobs_defaults():
    """Each option's default in --help is the job field's own default, so the help tells the truth."""
    from pipelines.cli import parser
    from pipelines.cli.training import TRAIN_FIELDS

    train = parser()._subparsers._group_actions[0].choices["train"]
    defaults = {a.dest: a.default for a in train._actions}
    for dest, name in TRAIN_FIELDS.items():
        if dest == "data":  # required: no default
            continue
        assert defaults[dest] == getattr(TrainJobConfig(), name), dest


@pytest.mark.parametrize("kind", list(KINDS))
def test_config_job_lists_every_field_with_its_default(kind, capsys):
    from pipelines.cli import run_command

    assert run_command(["config", "--job", kind]) == 0
    out = capsys.readouterr().out
    listed = yaml.safe_load(out)[kind]  # YAML a user can start a job file from
    for f in dataclasses.fields(job_class(kind)):
        assert f.name in listed, f.name
    if kind == "train":
        assert listed["workers"] == 2 and listed["model"]["optim"]["steps"] == 10000
        assert "worker-group restarts" in out and "#    every: 100" in out  # comments and the optional section


def test_config_job_resolves_a_file(tmp_path, capsys):
    from pipelines.cli import run_command

    f = _yaml(tmp_path, {"data": "s3://d/", "storage": "s3://r", "name": "n", "model": "tiny"})
    assert run_command(["config", "--job", "train", f, "--set", "workers=4", "--set", "optim.batch_size=8"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["workers"] == 4 and resolved["model"]["backbone"]["name"] == "pixelclip-tiny-vit"
    # what it prints reads back as the same job
    again = load(TrainJobConfig, [resolved], prefix="train")
    assert dataclasses.asdict(again) == resolved


def test_a_missing_required_field_is_named_where_it_sits():
    from pipelines.stages.train.job import ValidationConfig

    with pytest.raises(ConfigError, match=r"^train\.validation\.benchmark is required$"):
        load(ValidationConfig, [{"root": "r"}], prefix="train.validation")
    with pytest.raises(ConfigError, match=r"^train\.validation\.root is required$"):
        load(TrainJobConfig, [{"data": "d", "storage": "s", "name": "n", "validation": {"benchmark": "voc-20"}}],
             prefix="train")


def test_describe_marks_required_fields():
    from pipelines.stages.train.job import ValidationConfig

    lines = describe(ValidationConfig)
    assert lines[0].startswith("benchmark:  # required") and any(line.startswith("every: 100") for line in lines)
