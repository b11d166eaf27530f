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
