"""Dense-feature modes of `DenseEncoder` (plain, maskclip, sclip, clearclip) on tiny random CLIPs."""

import copy
import itertools

import pytest
import torch

from pixelclip.infer import Segmenter
from pixelclip.model.backbone import DENSE_MODES, DenseEncoder, create_clip, preprocess_stats
from pixelclip.model.vit_readout import READOUTS

CLASSES = ["cat", "grass", "sky"]


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_clip("pixelclip-tiny-vit", None)


@pytest.fixture(scope="module")
def cnx():
    return create_clip("pixelclip-tiny-convnext", None)


@pytest.fixture(scope="module")
def image():
    return torch.rand(2, 3, 48, 80, generator=torch.Generator().manual_seed(1))  # non-square: 6x10 grid


def _encoder(model, mode=None):
    stats = preprocess_stats(model)
    return DenseEncoder(model.visual, *stats) if mode is None else DenseEncoder(model.visual, *stats, mode=mode)


def _tokens_before_last_block(v, enc, img):
    """Hand-written embedding + all blocks but the last (batch-first): [B, L, C]."""
    x = v.conv1((img - enc.mean) / enc.std)  # [B, C, gh, gw]
    gh, gw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)  # [B, gh*gw, C]
    cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = v.ln_pre(torch.cat([cls, x], 1) + enc._pos_embed(gh, gw))
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    return x, (gh, gw)


def _head_attention(blk, x, use_k):
    """Reference SCLIP (use_k) / ClearCLIP attention of the last block, head by head: [B, L, C]."""
    attn = blk.attn
    C, nh = attn.embed_dim, attn.num_heads
    hd = C // nh
    h = blk.ln_1(x)
    q = h @ attn.in_proj_weight[:C].T + attn.in_proj_bias[:C]
    k = h @ attn.in_proj_weight[C:2 * C].T + attn.in_proj_bias[C:2 * C]
    v = h @ attn.in_proj_weight[2 * C:].T + attn.in_proj_bias[2 * C:]
    heads = []
    for i in range(nh):
        sl = slice(i * hd, (i + 1) * hd)
        qi, ki, vi = q[..., sl], k[..., sl], v[..., sl]  # [B, L, hd]
        a = torch.softmax(qi @ qi.transpose(1, 2) * hd ** -0.5, dim=-1)  # [B, L, L]
        if use_k:
            a = a + torch.softmax(ki @ ki.transpose(1, 2) * hd ** -0.5, dim=-1)
        heads.append(a @ vi)
    return attn.out_proj(torch.cat(heads, dim=-1))


def test_modes_are_the_readouts():
    assert DENSE_MODES == ("plain", "maskclip", "sclip", "clearclip")
    assert set(READOUTS) == set(DENSE_MODES)


@pytest.mark.parametrize("mode", DENSE_MODES)
@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_vit_mode_gives_dense_features(vit, mode, size):
    model, _ = vit
    enc = _encoder(model, mode)
    out = enc(torch.rand(2, 3, *size))
    assert enc.mode == mode
    assert out.shape == (2, model.visual.proj.shape[1], size[0] // 8, size[1] // 8)
    assert enc.out_dim == out.shape[1]
    assert torch.isfinite(out).all()


def test_vit_modes_differ_pairwise(vit, image):
    model, _ = vit
    with torch.no_grad():
        outs = {m: _encoder(model, m)(image) for m in DENSE_MODES}
    for a, b in itertools.combinations(DENSE_MODES, 2):
        rel = (outs[a] - outs[b]).norm() / torch.maximum(outs[a].norm(), outs[b].norm())
        assert rel > 0.05, f"{a} and {b} differ by only {rel:.3g} (relative)"


def test_maskclip_is_the_default_bit_for_bit(vit, image):
    model, _ = vit
    with torch.no_grad():
        default = _encoder(model)(image)
        assert _encoder(model).mode == "maskclip"
        assert torch.equal(_encoder(model, "maskclip")(image), default)
        assert torch.equal(_encoder(model, "sclip").with_mode("maskclip")(image), default)


def test_plain_is_open_clips_own_transformer(vit, image):
    model, _ = vit
    v = model.visual
    enc = _encoder(model, "plain")
    x, (gh, gw) = _tokens_before_last_block(v, enc, image)
    x = v.transformer.resblocks[-1](x)
    expected = (v.ln_post(x[:, 1:]) @ v.proj).transpose(1, 2).reshape(2, -1, gh, gw)
    torch.testing.assert_close(enc(image), expected)


@pytest.mark.parametrize(("mode", "use_k"), [("sclip", True), ("clearclip", False)])
def test_correlative_attention_matches_hand_reference(vit, image, mode, use_k):
    """Per-head softmax(q q^T s) (+ softmax(k k^T s)) @ v, out_proj, no residual and no MLP."""
    model, _ = vit
    v = model.visual
    assert v.transformer.resblocks[-1].attn.num_heads > 1  # the tiny ViT has 3 heads
    enc = _encoder(model, mode)
    with torch.no_grad():
        x, (gh, gw) = _tokens_before_last_block(v, enc, image)
        y = _head_attention(v.transformer.resblocks[-1], x, use_k)
        expected = (v.ln_post(y[:, 1:]) @ v.proj).transpose(1, 2).reshape(2, -1, gh, gw)
        torch.testing.assert_close(enc(image), expected, rtol=1e-4, atol=1e-5)


def test_sequence_first_transformer_gives_the_same_features(vit, image):
    model, _ = vit
    seq = copy.deepcopy(model.visual)
    seq.transformer.batch_first = False
    for blk in seq.transformer.resblocks:
        blk.attn.batch_first = False
    stats = preprocess_stats(model)
    with torch.no_grad():
        for mode in DENSE_MODES:
            torch.testing.assert_close(DenseEncoder(seq, *stats, mode=mode)(image),
                                       DenseEncoder(model.visual, *stats, mode=mode)(image),
                                       rtol=1e-4, atol=1e-5)


def test_convnext_plain_and_maskclip_are_the_same_readout(cnx):
    model, _ = cnx
    img = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        default = _encoder(model)(img)
        assert torch.equal(_encoder(model, "plain")(img), default)
        assert torch.equal(_encoder(model, "maskclip")(img), default)


@pytest.mark.parametrize("mode", ["sclip", "clearclip"])
def test_convnext_rejects_attention_modes(cnx, mode):
    model, _ = cnx
    with pytest.raises(ValueError, match=f"'{mode}'.*ConvNeXt"):
        _encoder(model, mode)
    with pytest.raises(ValueError, match=f"'{mode}'.*ConvNeXt"):
        _encoder(model).with_mode(mode)


def test_unknown_mode_lists_the_valid_ones(vit):
    model, _ = vit
    with pytest.raises(ValueError, match=r"'gem'.*plain, maskclip, sclip, clearclip"):
        _encoder(model, "gem")


def test_with_mode_shares_weights(vit, image):
    model, _ = vit
    enc = _encoder(model)
    other = enc.with_mode("sclip")
    assert other.mode == "sclip" and enc.mode == "maskclip"
    assert other.visual is enc.visual
    for (n, p), (n2, p2) in zip(enc.named_parameters(), other.named_parameters(), strict=True):
        assert n == n2 and p.data_ptr() == p2.data_ptr()
    assert other.mean.data_ptr() == enc.mean.data_ptr() and other.std.data_ptr() == enc.std.data_ptr()
    with torch.no_grad():
        assert torch.equal(other(image), _encoder(model, "sclip")(image))


@pytest.mark.parametrize("mode", DENSE_MODES)
def test_modes_run_without_grad_and_under_bf16_autocast(vit, image, mode):
    model, _ = vit
    enc = _encoder(model, mode)
    with torch.no_grad():
        ref = enc(image)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = enc(image)
    assert not ref.requires_grad and not low.requires_grad
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert (low.float() - ref).norm() / ref.norm() < 0.05


def test_segmenter_constructors_take_the_mode(vit, tiny_task):
    model, tok = vit
    assert Segmenter.from_open_clip(model, tok, 64).encoder.mode == "maskclip"
    seg = Segmenter.from_open_clip(model, tok, 64, mode="clearclip", protocol="slide", short_side=80)
    assert seg.encoder.mode == "clearclip" and seg.protocol == "slide"
    assert [tuple(o.shape) for o in seg.segment(torch.rand(3, 50, 70), CLASSES)] == [(50, 70)]
    assert Segmenter.from_pixelclip(tiny_task).encoder is tiny_task.student
    seg = Segmenter.from_pixelclip(tiny_task, mode="sclip")
    assert seg.encoder.mode == "sclip" and seg.encoder.visual is tiny_task.student.visual
    with pytest.raises(ValueError, match="unknown"):
        Segmenter.from_pixelclip(tiny_task, mode="nope")
