"""Validation while training (`pipelines.stages.train.validation`) and named variants of a sweep
(`pipelines.stages.tune.sweep`), without Ray."""

from __future__ import annotations

import pytest
import torch

import pixelclip
from pipelines.stages.train.job import TrainJobConfig, ValidationConfig
from pipelines.stages.train.validation import Validator
from pipelines.stages.tune.job import TuneJobConfig, parse_variant
from pipelines.stages.tune.sweep import param_space
from pipelines.synth.scenes import write_eval_split
from pixelclip.eval.miou import ConfusionMatrix
from pixelclip.infer import Segmenter
from pixelclip.synth import CLASS_NAMES, STUFF_NAMES, THING_NAMES, SceneConfig


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth-eval")
    write_eval_split(str(root), 6, SceneConfig(size=64), seed=4)
    return str(root)


def _cfg(root: str, **kw) -> ValidationConfig:
    return ValidationConfig(**{"benchmark": "ade20k-150", "root": root, "class_names": list(CLASS_NAMES),
                               "groups": {"stuff": list(STUFF_NAMES), "things": list(THING_NAMES)}, **kw})


def test_validator_equals_a_direct_evaluation_and_restores_training_mode(split):
    task = pixelclip.build_pixelclip(pixelclip.load_config("tiny")).train()
    val = Validator(_cfg(split, limit=4))
    assert len(val) == 4
    out = val(task)
    # back in training mode afterwards, the teacher as its teacher_mode says ("train", the authors')
    assert task.training and task.student.training and task.teacher.training
    seg = Segmenter.from_pixelclip(task.eval(), mode="maskclip", templates=("A photo of a {} in the scene.",))
    cm = ConfusionMatrix(len(CLASS_NAMES))
    for s in val.samples:
        cm.update(seg.segment(s.image, list(CLASS_NAMES))[0], torch.from_numpy(s.label))
    assert out["val_miou"] == pytest.approx(cm.miou() * 100)
    iou = cm.iou()
    things = iou[[CLASS_NAMES.index(n) for n in THING_NAMES]]
    assert out["val_miou_things"] == pytest.approx(float(things[~things.isnan()].mean() * 100))
    assert 0 <= out["val_miou_stuff"] <= 100 and out["val_seconds"] > 0


def test_validator_reads_class_names_from_a_file(split):
    val = Validator(_cfg(split, class_names=f"{split}/class_names.txt", groups={}, limit=None))
    assert val.class_names == list(CLASS_NAMES) and len(val) == 6


@pytest.mark.parametrize(("change", "match"), [
    ({"benchmark": "imagenet"}, "validation.benchmark"),
    ({"every": 0}, "validation.every"),
    ({"limit": 0}, "validation.limit"),
    ({"mode": "bogus"}, "validation.mode"),
    ({"templates": "many"}, "validation.templates"),
    ({"groups": {"bad name": ["grass"]}}, "validation.groups"),
])
def test_bad_validation_settings_name_the_field(split, change, match):
    with pytest.raises(ValueError, match=match):
        _cfg(split, **change).validate()
    job = TrainJobConfig(data="s3://d/", storage="s3://r/", name="n", model=pixelclip.load_config("tiny").to_dict(),
                         validation={**_cfg(split).__dict__, **change})
    with pytest.raises(ValueError, match=match):
        job.validate()


def test_unknown_group_class_and_unknown_field_are_refused(split):
    with pytest.raises(ValueError, match=r"groups\.things"):
        Validator(_cfg(split, groups={"things": ["unicorn"]}))
    with pytest.raises(ValueError, match=r"unknown field train\.validation\.evry"):
        TrainJobConfig(data="s3://d/", storage="s3://r/", name="n", model=pixelclip.load_config("tiny").to_dict(),
                       validation={"benchmark": "ade20k-150", "root": split, "evry": 5})


def test_named_variants_form_a_grid_and_reach_the_trial():
    model = pixelclip.load_config("tiny").to_dict()
    job = TuneJobConfig(storage="s3://s", name="ab", train={"data": "s3://d/", "model": model},
                        variants=dict([parse_variant("fast: optim.lr_clip=1e-3; cluster.mode=centroids"),
                                       parse_variant("base:")])).validate()
    assert job.variants == {"fast": ["optim.lr_clip=1e-3", "cluster.mode=centroids"], "base": []}
    assert list(param_space(job.search, job.variants)) == ["variant"]
    trial = job.trial_job({"variant": "fast"}, "t1")
    assert trial.model.optim.lr_clip == 1e-3 and trial.model.cluster.mode == "centroids"
    assert trial.tags["pixelclip.variant"] == "fast"
    assert job.trial_job({"variant": "base"}, "t2").model.to_dict() == model
    with pytest.raises(ValueError, match=r"tune\.variants\.bad"):
        TuneJobConfig(storage="s3://s", name="ab", train={"data": "s3://d/", "model": model},
                      variants={"bad": ["cluster.mode=kmeans"]}).validate()
    with pytest.raises(ValueError, match="NAME"):
        parse_variant("no colon here")
