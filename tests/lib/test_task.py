import pytest
import torch

import pixelclip
from pixelclip.model.momentum import ema_update
from pixelclip.model.prompts import placeholder_positions
from tests.conftest import synthetic_batch


def test_text_encoder_matches_open_clip(tiny_task):
    ids = tiny_task.text.tokenize(["a photo of a cat.", "grass"])
    assert tiny_task.text._used_length(ids) == 8 < ids.shape[1]  # padding after <eot> is cut off exactly
    torch.testing.assert_close(tiny_task.text.encode(ids), tiny_task.clip.encode_text(ids))


def test_prompts_sit_exactly_at_the_placeholders(tiny_task):
    """Prompt tokens set to the embeddings of real words encode like the template with those words."""
    text, prompts = tiny_task.text, tiny_task.prompts
    _ids, pos = placeholder_positions(text.tokenizer, prompts.template, prompts.tokens.shape[1])
    assert pos.tolist() == [5, 6, 7, 8]  # <sot> a photo of a [X X X X] in the scene . <eot>
    words = ["red car parked here", "green grass and sky"]
    word_ids = [text.tokenize([w])[0, 1:5] for w in words]  # the 4 tokens of each phrase
    with torch.no_grad():
        for k, wid in enumerate(word_ids):
            prompts.tokens[k] = text.embed_tokens(wid)
    feats = prompts(text)
    assert feats.shape == (prompts.num_classes, tiny_task.clip.text_projection.shape[1])
    expected = text.encode(text.tokenize([prompts.template.format(w) for w in words]))
    torch.testing.assert_close(feats[:2], expected)


def test_prompt_init_is_seeded_random_tokens(tiny_cfg):
    a = pixelclip.build_pixelclip(tiny_cfg).prompts.tokens
    b = pixelclip.build_pixelclip(tiny_cfg).prompts.tokens
    c = pixelclip.build_pixelclip(pixelclip.load_config("tiny", ["prompts.seed=1"])).prompts.tokens
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (8, 4, 64) and len({tuple(t.flatten()[:4].tolist()) for t in a}) > 1


def test_gradients_reach_only_what_trains(tiny_task, tiny_cfg):
    out = tiny_task(**synthetic_batch(tiny_cfg))
    out.loss.backward()
    with_grad = {n for n, p in tiny_task.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "prompts.tokens" in with_grad
    assert any(n.startswith("decoder.") for n in with_grad)
    assert any(n.startswith("clip.visual.") and ".attn." in n for n in with_grad)
    allowed = ("prompts.", "decoder.", "clip.visual.", "student.visual.")
    assert all(n.startswith(allowed) for n in with_grad), sorted(with_grad)
    assert all(p.grad is None for n, p in tiny_task.clip.named_parameters() if not n.startswith("visual."))
    assert all(p.grad is None for p in tiny_task.teacher.parameters())


def test_ema_update_equals_the_formula(tiny_task):
    student, teacher = tiny_task.student.visual, tiny_task.teacher.visual
    with torch.no_grad():
        for p in student.parameters():
            if p.requires_grad:
                p.add_(1.0)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    s = dict(student.named_parameters())
    ema_update(teacher, student, 0.9)
    for n, p in teacher.named_parameters():
        expected = 0.9 * before[n] + 0.1 * s[n] if s[n].requires_grad else before[n]
        torch.testing.assert_close(p, expected)
        assert not p.requires_grad


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "tiny_convnext"])
def test_thirty_steps_halve_the_loss(preset):
    cfg = pixelclip.load_config(preset)
    task = pixelclip.build_pixelclip(cfg)
    trainer = pixelclip.Trainer(task, cfg)
    batch = synthetic_batch(cfg)
    losses = [trainer.step(**batch)["loss"] for _ in range(30)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] <= 0.5 * losses[0], losses
    assert trainer.step_count == 30 and trainer.skipped == 0


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # the schedule alone, no steps
def test_schedule_and_groups(tiny_task, tiny_cfg):
    trainer = pixelclip.Trainer(tiny_task, tiny_cfg)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["prompts"]["lr"] == tiny_cfg.optim.lr_prompts and groups["prompts"]["weight_decay"] == 0
    assert groups["decoder"]["weight_decay"] == tiny_cfg.optim.weight_decay
    assert groups["decoder_no_wd"]["weight_decay"] == 0  # GroupNorm parameters
    assert any(p is tiny_task.clip.visual.positional_embedding for p in groups["clip_no_wd"]["params"])
    total = tiny_cfg.optim.steps
    for _ in range(total):
        trainer.scheduler.step()
    assert groups["prompts"]["lr"] == pytest.approx(0.5 * tiny_cfg.optim.lr_prompts)


def test_encoder_warmup_leaves_decoder_and_prompts_at_full_rate():
    """optim.warmup_steps ramps the CLIP tower's rate linearly; the decoder and the prompts start at theirs."""
    from pixelclip.train import cosine_factor

    cfg = pixelclip.load_config("tiny", ["optim.warmup_steps=10"])
    trainer = pixelclip.Trainer(pixelclip.build_pixelclip(cfg), cfg)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["clip"]["lr"] == pytest.approx(cfg.optim.lr_clip / 10)
    assert groups["decoder"]["lr"] == pytest.approx(cfg.optim.lr_decoder)
    assert groups["prompts"]["lr"] == pytest.approx(cfg.optim.lr_prompts)
    for _ in range(4):
        trainer.scheduler.step()
    cos4 = cosine_factor(4, cfg.optim.steps, cfg.optim.final_lr_ratio)
    assert groups["clip_no_wd"]["lr"] == pytest.approx(cfg.optim.lr_clip * 0.5 * cos4)
    for _ in range(10):
        trainer.scheduler.step()
    cos14 = cosine_factor(14, cfg.optim.steps, cfg.optim.final_lr_ratio)
    assert groups["clip"]["lr"] == pytest.approx(cfg.optim.lr_clip * cos14)  # after the warm-up: the cosine
    with pytest.raises(pixelclip.ConfigError, match=r"optim\.warmup_steps"):
        pixelclip.load_config("tiny", ["optim.warmup_steps=30"])


def test_image_without_masks_is_skipped_and_empty_batch_is_finite(tiny_task, tiny_cfg):
    batch = synthetic_batch(tiny_cfg)
    batch["masks"][1] = False  # image 1 has no masks
    out = tiny_task(**batch)
    assert torch.isfinite(out.loss) and (out.assign[1] == -1).all() and (out.assign[0] >= 0).all()
    batch["masks"][:] = False  # no masks at all
    out = tiny_task(**batch)
    assert out.loss.item() == 0.0 and out.metrics["masks"] == 0
    out.loss.backward()  # still part of the graph: DDP and the optimiser see a zero gradient
    assert tiny_task.prompts.tokens.grad is not None
    empty = {**batch, "masks": batch["masks"][:, :0]}  # N = 0
    assert tiny_task(**empty).loss.item() == 0.0


def test_tiny_masks_are_dropped(tiny_task, tiny_cfg):
    batch = synthetic_batch(tiny_cfg)
    batch["masks"][0, 0] = False
    batch["masks"][0, 0, 5, 5] = True  # one pixel: dropped
    out = tiny_task(**batch)
    assert out.assign[0, 0] == -1 and (out.assign[0, 1:] >= 0).all()


@pytest.mark.parametrize(("change", "match"), [
    (lambda b: {**b, "weak": b["weak"][:, :2]}, "weak must be images"),
    (lambda b: {**b, "weak": (b["weak"] * 255).to(torch.uint8)}, "float tensor"),
    (lambda b: {**b, "strong": b["strong"][:2]}, "differ in shape"),
    (lambda b: {**b, "masks": b["masks"].float()}, "masks must be bool"),
    (lambda b: {**b, "masks": b["masks"][:2]}, "masks hold 2 images"),
    (lambda b: {**b, "masks": b["masks"][..., :32, :32]}, "data.mask_size"),
    (lambda b: {**b, "masks": b["masks"][0]}, "masks must be"),
    (lambda b: {**b, "keep": torch.ones(4, 8, 8, dtype=torch.bool)}, "keep must be"),
])
def test_bad_batches_raise(tiny_task, tiny_cfg, change, match):
    with pytest.raises(ValueError, match=match):
        tiny_task(**change(synthetic_batch(tiny_cfg)))


def test_non_finite_loss_is_skipped(tiny_task, tiny_cfg):
    trainer = pixelclip.Trainer(tiny_task, tiny_cfg)
    batch = synthetic_batch(tiny_cfg)
    batch["strong"][0, 0, 0, 0] = float("nan")
    before = tiny_task.prompts.tokens.detach().clone()
    m = trainer.step(**batch)
    assert m["skipped"] == 1.0 and trainer.skipped == 1 and trainer.step_count == 0
    assert torch.equal(before, tiny_task.prompts.tokens)


def test_cutout_pixels_leave_the_loss(tiny_task, tiny_cfg):
    batch = synthetic_batch(tiny_cfg)
    keep = torch.zeros(4, 64, 64, dtype=torch.bool)
    out = tiny_task(**batch, keep=keep)
    assert out.loss.item() == 0.0 and out.metrics["covered_fraction"] == 0.0


def test_images_outside_unit_range_are_refused(tiny_task, tiny_cfg):
    batch = synthetic_batch(tiny_cfg)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        tiny_task(**{**batch, "weak": batch["weak"] * 255})


def test_clustering_leaves_bf16_autocast(tiny_task, tiny_cfg):
    """Under bf16 autocast the teacher runs in bf16, but pooling, logits, Sinkhorn and argmax run in
    float32/float64 on its output: the assignment equals the fp32 clustering of the same features."""
    from pixelclip.model.cluster import assign_masks

    batch = synthetic_batch(tiny_cfg, n_masks=12)
    cls = tiny_task.class_features().detach()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = tiny_task.teacher(batch["weak"])  # [B, D, h, w] bf16, what the step's teacher gives
        got, plan = tiny_task.assign_masks(batch["weak"], batch["masks"], cls)
    assert feats.dtype == torch.bfloat16 and plan.dtype == torch.float64
    ref, _ = assign_masks(feats.float(), batch["masks"], cls, tiny_task.epsilon, tiny_task.sinkhorn_iters)
    assert torch.equal(got, ref)


def test_teacher_mode_follows_the_config(tiny_cfg):
    """teacher_mode "train" (the authors') leaves the teacher in train mode while training; "eval" keeps
    it in eval mode. Inference (task.eval()) puts both in eval mode."""
    task = pixelclip.build_pixelclip(tiny_cfg).train()
    assert tiny_cfg.momentum.teacher_mode == "train" and task.teacher.training and task.student.training
    frozen = pixelclip.build_pixelclip(pixelclip.load_config("tiny", ["momentum.teacher_mode=eval"])).train()
    assert not frozen.teacher.training and frozen.student.training
    assert not task.eval().teacher.training
    with pytest.raises(pixelclip.ConfigError, match=r"momentum\.teacher_mode"):
        pixelclip.load_config("tiny", ["momentum.teacher_mode=frozen"])


def test_decoder_groups_are_the_authors():
    """16 channels a GroupNorm group by default: 4 groups in the 64-channel block, 2 in the 32-channel one."""
    task = pixelclip.build_pixelclip(pixelclip.load_config("vit_b16", ["backbone.pretrained=null"]))
    norms = [m.num_groups for m in task.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms == [4, 4, 2, 2]
    tiny = [m.num_groups for m in pixelclip.build_pixelclip(pixelclip.load_config("tiny")).decoder.modules()
            if isinstance(m, torch.nn.GroupNorm)]
    assert tiny == [4, 4, 4, 4]  # an explicit decoder.groups serves both blocks
    with pytest.raises(pixelclip.ConfigError, match=r"decoder\.groups"):
        pixelclip.load_config("tiny", ["decoder.groups=0"])  # 16 and 8 channels: not multiples of 16


def test_prompts_can_start_from_the_tokens_of_given_words():
    """prompts.init_words: the initial tokens are embeddings of those words' tokens only."""
    from pixelclip.synth import caption_words

    words = caption_words()
    assert {"a", "grass", "ball", "photo"} <= set(words)
    cfg = pixelclip.load_config("tiny", ["prompts.init_words=[grass, ball]"])
    task = pixelclip.build_pixelclip(cfg)
    text = task.text
    allowed = torch.cat([text.tokenize([w])[0, 1:2] for w in ("grass", "ball")])  # one token each
    table = text.tower.token_embedding.weight[allowed]  # [2, d]
    tokens = task.prompts.tokens.detach().reshape(-1, table.shape[1])  # [K*l, d]
    assert all(any(torch.equal(t, row) for row in table) for t in tokens)
    assert not torch.equal(task.prompts.tokens, pixelclip.build_pixelclip(pixelclip.load_config("tiny")).prompts.tokens)
