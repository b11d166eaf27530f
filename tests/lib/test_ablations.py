"""The paper's ablations as configurations (cluster.mode, momentum.gamma=0): each builds, trains,
checkpoints, and does what its name says."""

from __future__ import annotations

import pytest
import torch

import pixelclip
from pixelclip.config import ConfigError
from pixelclip.io import load_checkpoint, save_checkpoint
from pixelclip.model.classes import ClassCentroids, FixedClasses
from pixelclip.model.prompts import ClassPrompts
from pixelclip.synth import CLASS_NAMES
from tests.conftest import synthetic_batch

NAMES = ["grass", "sand", "water", "red ball"]
MODES = {"prompts": [], "centroids": ["cluster.mode=centroids"],
         "names": ["cluster.mode=names", f"cluster.class_names=[{', '.join(NAMES)}]"], "none": ["cluster.mode=none"]}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_trains_and_round_trips(tmp_path, mode):
    cfg = pixelclip.load_config("tiny", MODES[mode])
    task = pixelclip.build_pixelclip(cfg)
    trainer = pixelclip.Trainer(task, cfg)
    batch = synthetic_batch(cfg)
    losses = [trainer.step(**batch)["loss"] for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
    kind = {"prompts": ClassPrompts, "centroids": ClassCentroids, "names": FixedClasses, "none": type(None)}[mode]
    assert isinstance(task.prompts, kind)
    assert cfg.num_classes == (len(NAMES) if mode == "names" else cfg.prompts.num_clusters)
    path = save_checkpoint(tmp_path / "c.safetensors", task, trainer.optimizer, trainer.scheduler, step=8)
    again = pixelclip.build_pixelclip(cfg)
    load_checkpoint(path, again, pixelclip.Trainer(again, cfg).optimizer)
    for (n, a), (_, b) in zip(task.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_centroids_learn_without_the_text_encoder():
    cfg = pixelclip.load_config("tiny", MODES["centroids"])
    task = pixelclip.build_pixelclip(cfg)
    trainer = pixelclip.Trainer(task, cfg)
    before = task.prompts.centroids.detach().clone()
    text_before = {n: p.clone() for n, p in task.text.tower.named_parameters() if not n.startswith("visual.")}
    trainer.step(**synthetic_batch(cfg))
    assert not torch.equal(before, task.prompts.centroids)  # the centroids are the learnable classes
    assert task.prompts.centroids.shape == (cfg.prompts.num_clusters, task.student.out_dim)
    for n, p in task.text.tower.named_parameters():
        assert n.startswith("visual.") or torch.equal(p, text_before[n]), n
    group = {g["name"]: g for g in trainer.optimizer.param_groups}["prompts"]
    assert len(group["params"]) == 1 and group["params"][0] is task.prompts.centroids
    assert group["initial_lr"] == cfg.optim.lr_prompts


def test_fixed_names_are_the_text_features_and_assign_by_argmax():
    cfg = pixelclip.load_config("tiny", MODES["names"])
    task = pixelclip.build_pixelclip(cfg)
    expected = task.text.class_embeddings(NAMES, [cfg.prompts.template])
    torch.testing.assert_close(task.class_features(), expected)
    trainer = pixelclip.Trainer(task, cfg)
    assert "prompts" not in {g["name"] for g in trainer.optimizer.param_groups}  # nothing class-side learns
    batch = synthetic_batch(cfg)
    assign, q = task.assign_masks(batch["weak"], batch["masks"], task.class_features())
    assert torch.equal(assign[assign >= 0], q.argmax(1))
    # argmax, not Sinkhorn: the same masks scored against the same names give the nearest name
    pooled = pixelclip.model.cluster.mask_pool(task.teacher(batch["weak"]).float(), batch["masks"])[0]
    valid = batch["masks"].flatten(2).sum(-1) > 1
    nearest = (torch.nn.functional.normalize(pooled[valid], dim=-1) @ expected.T).argmax(1)
    assert torch.equal(assign[valid], nearest)


def test_without_clustering_each_mask_is_its_own_target():
    cfg = pixelclip.load_config("tiny", MODES["none"])
    task = pixelclip.build_pixelclip(cfg)
    batch = synthetic_batch(cfg)
    out = task(**batch)
    valid = batch["masks"].flatten(2).sum(-1) > 1
    assert torch.equal(out.assign >= 0, valid)
    assert torch.equal(out.assign[valid], torch.arange(batch["masks"].shape[1]).expand_as(valid)[valid])
    with pytest.raises(ValueError, match="without semantic clustering"):
        task.class_features()


def test_momentum_gamma_zero_makes_the_teacher_the_student():
    cfg = pixelclip.load_config("tiny", ["momentum.gamma=0"])
    task = pixelclip.build_pixelclip(cfg)
    trainer = pixelclip.Trainer(task, cfg)
    batch = synthetic_batch(cfg)
    for _ in range(2):
        trainer.step(**batch)
    trainer.task.train()
    pixelclip.model.momentum.ema_update(task.teacher.visual, task.student.visual, cfg.momentum.gamma)
    for (n, t), (_, s) in zip(task.teacher.visual.named_parameters(), task.student.visual.named_parameters(),
                              strict=True):
        assert torch.equal(t, s), n


def test_checkpoint_of_another_mode_is_refused(tmp_path):
    cfg = pixelclip.load_config("tiny")
    path = save_checkpoint(tmp_path / "c.safetensors", pixelclip.build_pixelclip(cfg))
    other = pixelclip.build_pixelclip(pixelclip.load_config("tiny", MODES["centroids"]))
    with pytest.raises(ValueError, match=r"another cluster\.mode"):
        load_checkpoint(path, other)


@pytest.mark.parametrize(("overrides", "field"), [
    (["cluster.mode=kmeans"], "cluster.mode"),
    (["cluster.mode=names"], "cluster.class_names"),
    (["cluster.mode=names", "cluster.class_names=[grass]"], "cluster.class_names"),
    (["cluster.class_names=[grass, sand]"], "cluster.class_names"),
])
def test_bad_cluster_settings_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        pixelclip.load_config("tiny", overrides)


def test_the_synth_class_names_work_as_fixed_classes():
    names = ", ".join(f'"{n}"' for n in CLASS_NAMES)
    cfg = pixelclip.load_config("tiny", ["cluster.mode=names", f"cluster.class_names=[{names}]"])
    assert cfg.num_classes == len(CLASS_NAMES)
    assert pixelclip.build_pixelclip(cfg).class_features().shape[0] == len(CLASS_NAMES)
