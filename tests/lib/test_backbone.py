import open_clip
import pytest
import torch
import torch.nn.functional as F

import pixelclip
from pixelclip.model.backbone import DenseEncoder, create_clip, preprocess_stats


@pytest.fixture(scope="module")
def vit():
    return create_clip("pixelclip-tiny-vit", None)


@pytest.fixture(scope="module")
def cnx():
    return create_clip("pixelclip-tiny-convnext", None)


@pytest.mark.parametrize("size", [(64, 64), (96, 64), (40, 72)])
def test_vit_dense_features_any_size(vit, size):
    model, _ = vit
    enc = DenseEncoder(model.visual, *preprocess_stats(model))
    out = enc(torch.rand(2, 3, *size))
    assert out.shape == (2, model.visual.proj.shape[1], size[0] // 8, size[1] // 8)
    assert torch.isfinite(out).all()


def test_vit_last_block_is_maskclip_style(vit):
    """Recompute the documented formula by hand from the model's own modules."""
    model, _ = vit
    v = model.visual
    enc = DenseEncoder(v, *preprocess_stats(model))
    img = torch.rand(1, 3, 64, 64)
    x = (img - enc.mean) / enc.std
    x = v.conv1(x).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.view(1, 1, -1), x], 1) + v.positional_embedding
    x = v.ln_pre(x)
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    blk = v.transformer.resblocks[-1]
    W = blk.attn.embed_dim
    val = F.linear(blk.ln_1(x), blk.attn.in_proj_weight[2 * W:], blk.attn.in_proj_bias[2 * W:])
    y = x[:, :1] + blk.attn.out_proj(val)
    y = y + blk.mlp(blk.ln_2(y))
    expected = (v.ln_post(y[:, 1:]) @ v.proj).transpose(1, 2).reshape(1, -1, 8, 8)
    torch.testing.assert_close(enc(img), expected)


def test_vit_positional_embedding_resized_bicubically(vit):
    model, _ = vit
    enc = DenseEncoder(model.visual, *preprocess_stats(model))
    pos = enc._pos_embed(12, 10)
    assert pos.shape == (1 + 120, model.visual.positional_embedding.shape[1])
    torch.testing.assert_close(pos[0], model.visual.positional_embedding[0])  # CLS position unchanged
    torch.testing.assert_close(enc._pos_embed(8, 8), model.visual.positional_embedding)


def test_convnext_dense_features_per_location_projection(cnx):
    model, _ = cnx
    enc = DenseEncoder(model.visual, *preprocess_stats(model))
    img = torch.rand(2, 3, 128, 96)
    out = enc(img)
    assert out.shape == (2, 64, 4, 3)
    # The global embedding of open_clip pools the same trunk features before the projection; with a
    # linear projection, the mean of our per-location features equals projecting the mean of the
    # normed features: check against the trunk directly.
    t = model.visual.trunk
    feats = t.head.norm(t.forward_features((img - enc.mean) / enc.std))
    manual = model.visual.head.proj(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, manual)


def test_trainable_parameters_follow_the_reference(tiny_cfg):
    task = pixelclip.build_pixelclip(tiny_cfg)
    names = {n for n, p in task.clip.visual.named_parameters() if p.requires_grad}
    assert "positional_embedding" in names
    assert all(n == "positional_embedding" or ".attn." in n for n in names)
    assert any("in_proj_weight" in n for n in names) and any("out_proj" in n for n in names)
    text = [n for n, p in task.clip.named_parameters() if not n.startswith("visual.") and p.requires_grad]
    assert text == []
    assert not any(p.requires_grad for p in task.teacher.parameters())
    cnx_task = pixelclip.build_pixelclip(pixelclip.load_config("tiny_convnext"))
    assert all(p.requires_grad for p in cnx_task.clip.visual.parameters())
    custom = pixelclip.build_pixelclip(pixelclip.load_config("tiny", ["backbone.trainable=[ln_post]"]))
    assert {n for n, p in custom.clip.visual.named_parameters() if p.requires_grad} == {
        "ln_post.weight", "ln_post.bias"}


def test_no_monkey_patching(vit):
    """Building PixelCLIP leaves open_clip's own forward untouched."""
    model, _ = vit
    img = torch.rand(1, 3, 64, 64)
    before = model.encode_image(img)
    DenseEncoder(model.visual, *preprocess_stats(model))(img)
    torch.testing.assert_close(model.encode_image(img), before)
    assert type(model.visual).forward is open_clip.transformer.VisionTransformer.forward


def test_bad_backbone_names():
    with pytest.raises(ValueError, match="not an open_clip model"):
        create_clip("no-such-model", None)
    with pytest.raises(ValueError, match="neither a file nor a tag"):
        create_clip("pixelclip-tiny-vit", "/no/such/file.safetensors")


@pytest.fixture
def stub_weights(monkeypatch):
    """open_clip's real tag path (pretrained config, preprocessing, QuickGELU check), with the download
    and the weight loading stubbed out: the architecture is what a user with the weights gets."""
    import open_clip.factory as factory

    monkeypatch.setattr(factory, "download_pretrained", lambda cfg, cache_dir=None: "stubbed-weights")
    monkeypatch.setattr(factory, "load_checkpoint", lambda *a, **k: None)


def _activations(module) -> set[str]:
    return {type(m).__name__ for m in module.modules() if "gelu" in type(m).__name__.lower()}


@pytest.mark.parametrize(("name", "tag", "built", "act"), [
    ("ViT-B-16", "openai", "ViT-B-16-quickgelu", "QuickGELU"),  # the vit_b16 preset as a user may write it
    ("ViT-B-16-quickgelu", "openai", "ViT-B-16-quickgelu", "QuickGELU"),
    ("ViT-B-16", "laion2b_s34b_b88k", "ViT-B-16", "GELU"),
    ("convnext_base_w_320", "laion_aesthetic_s13b_b82k", "convnext_base_w_320", "GELU"),
])
def test_activation_is_the_weights(stub_weights, name, tag, built, act):
    """The model is built with the activation its weights were trained with, in both towers, and
    open_clip has nothing to warn about."""
    import warnings

    from pixelclip.model.backbone import resolve_model_name

    assert resolve_model_name(name, tag) == built
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="QuickGELU mismatch")
        model, _ = create_clip(name, tag)
    assert _activations(model.visual) == {act} and _activations(model.transformer) == {act}


def test_preset_builds_quickgelu_and_checkpoints_carry_it(stub_weights):
    """The vit_b16 preset written with the plain name builds QuickGELU; the task's model_name (what
    checkpoints, exports and registry models record) is the -quickgelu configuration."""
    from pixelclip.io import _built_config

    cfg = pixelclip.load_config("vit_b16", ["backbone.name=ViT-B-16"])
    task = pixelclip.build_pixelclip(cfg)
    assert task.model_name == "ViT-B-16-quickgelu"
    assert _activations(task.student.visual) == _activations(task.teacher.visual) == {"QuickGELU"}
    assert _built_config(task, cfg.to_dict())["backbone"]["name"] == "ViT-B-16-quickgelu"
    rebuilt = open_clip.create_model(task.model_name)  # what load_pixelclip does (weights from the file)
    assert _activations(rebuilt) == {"QuickGELU"}


def test_unknown_tag_is_one_clear_error():
    from pixelclip.model.backbone import resolve_model_name

    with pytest.raises(ValueError, match=r"backbone.pretrained 'opneai' is neither a file nor a tag of ViT-B-16 "
                                         r"\(tags: openai, "):
        resolve_model_name("ViT-B-16", "opneai")
    with pytest.raises(ValueError, match="must exist on this machine"):
        resolve_model_name("ViT-B-16", "/no/such/weights.pt")
    with pytest.raises(ValueError, match="not an open_clip model configuration"):
        resolve_model_name("ViT-B-17", "openai")


@pytest.mark.slow
def test_convnext_teacher_in_train_mode_keeps_stochastic_depth(stub_weights):
    """convnext_base_w_320 has stochastic depth 0.1: with teacher_mode "train" (the authors') the teacher's
    features vary from call to call while training, with "eval" they do not."""
    cfg = pixelclip.load_config("convnext_b", ["backbone.image_size=64", "prompts.num_clusters=4"])
    task = pixelclip.build_pixelclip(cfg).train()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = task.teacher(x), task.teacher(x)
        assert not torch.equal(a, b)
        task.teacher.eval()
        assert torch.equal(task.teacher(x), task.teacher(x))
