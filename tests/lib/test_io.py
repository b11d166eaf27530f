import logging

import open_clip
import pytest
import torch

import pixelclip
from pixelclip.io import export_open_clip, load_checkpoint, load_pixelclip, read_checkpoint, save_checkpoint
from pixelclip.model.backbone import DenseEncoder, preprocess_stats
from tests.conftest import synthetic_batch


def _train(cfg, steps):
    task = pixelclip.build_pixelclip(cfg)
    trainer = pixelclip.Trainer(task, cfg)
    batch = synthetic_batch(cfg)
    for _ in range(steps):
        trainer.step(**batch)
    return task, trainer, batch


def test_checkpoint_round_trip_is_bit_exact(tmp_path, tiny_cfg):
    task, trainer, batch = _train(tiny_cfg, 3)
    path = save_checkpoint(tmp_path / "ckpt.safetensors", task, trainer.optimizer, trainer.scheduler,
                           step=trainer.step_count, config=tiny_cfg.to_dict())
    fresh = pixelclip.build_pixelclip(pixelclip.load_config("tiny", ["seed=7", "prompts.seed=5"]))
    fresh_trainer = pixelclip.Trainer(fresh, tiny_cfg)
    meta = load_checkpoint(path, fresh, fresh_trainer.optimizer, fresh_trainer.scheduler)
    assert meta["step"] == 3 and meta["config"] == tiny_cfg.to_dict()
    for (n, a), (_, b) in zip(task.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    sa, sb = trainer.optimizer.state_dict(), fresh_trainer.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i in sa["state"]:
        for k in sa["state"][i]:
            assert torch.equal(torch.as_tensor(sa["state"][i][k]), torch.as_tensor(sb["state"][i][k]))
    assert trainer.scheduler.state_dict()["last_epoch"] == fresh_trainer.scheduler.state_dict()["last_epoch"]
    # training continues identically from the restored state
    a = trainer.step(**batch)["loss"]
    b = fresh_trainer.step(**batch)["loss"]
    assert a == b
    assert torch.equal(task.prompts.tokens, fresh.prompts.tokens)


def test_load_pixelclip_rebuilds_from_the_stored_config(tmp_path, tiny_cfg, caplog):
    task, _trainer, batch = _train(tiny_cfg, 2)
    path = save_checkpoint(tmp_path / "c.safetensors", task, step=2, config=tiny_cfg.to_dict())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded, meta = load_pixelclip(path)
    assert "initialized randomly" not in caplog.text  # the weights come from the checkpoint: no false alarm
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pixelclip.build_pixelclip(tiny_cfg)
    assert "initialized randomly" in caplog.text  # a truly random model still says so
    assert meta["step"] == 2
    task.eval()
    loaded.eval()
    torch.testing.assert_close(loaded.student(batch["weak"]), task.student(batch["weak"]), rtol=0, atol=0)


def test_checkpoint_holds_no_pickles_and_rejects_mismatch(tmp_path, tiny_cfg):
    task, _, _ = _train(tiny_cfg, 1)
    path = save_checkpoint(tmp_path / "c.safetensors", task)
    tensors, _meta = read_checkpoint(path)
    assert "prompts.tokens" in tensors and any(k.startswith("teacher.") for k in tensors)
    other = pixelclip.build_pixelclip(pixelclip.load_config("tiny", ["prompts.num_clusters=4"]))
    with pytest.raises(ValueError, match=r"prompts\.tokens"):
        load_checkpoint(path, other)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):  # noqa: B017 (safetensors raises its own error type)
        read_checkpoint(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("preset", ["tiny", "tiny_convnext"])
def test_export_loads_in_open_clip_with_the_same_dense_features(tmp_path, preset):
    cfg = pixelclip.load_config(preset)
    task, _, batch = _train(cfg, 2)
    path = export_open_clip(task, tmp_path / "pixelclip.safetensors")
    model = open_clip.create_model(cfg.backbone.name, pretrained=str(path))
    model.eval()
    task.eval()
    enc = DenseEncoder(model.visual, *preprocess_stats(model))
    x = batch["weak"]
    torch.testing.assert_close(enc(x), task.student(x), rtol=0, atol=0)
    ids = task.text.tokenize(["a cat"])
    torch.testing.assert_close(model.encode_text(ids), task.clip.encode_text(ids), rtol=0, atol=0)
    # a folder export also loads by its config alone
    folder = export_open_clip(task, tmp_path / "export").parent
    model2 = open_clip.create_model("local-dir:" + str(folder))
    model2.eval()
    torch.testing.assert_close(DenseEncoder(model2.visual, *preprocess_stats(model2))(x), task.student(x))
