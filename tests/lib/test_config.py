import pytest

from pixelclip.config import PRESETS, ConfigError, load_config


def test_presets_follow_the_paper():
    vit, cnx = load_config("vit_b16"), load_config("convnext_b")
    assert (vit.backbone.name, vit.backbone.pretrained) == ("ViT-B-16-quickgelu", "openai")  # OpenAI's activation
    assert vit.backbone.image_size == 320
    assert vit.cluster.epsilon == 0.01 and cnx.cluster.epsilon == 1.0
    assert cnx.backbone.image_size == 640 and cnx.backbone.name == "convnext_base_w_320"
    for c in (vit, cnx):
        assert (c.prompts.num_clusters, c.prompts.length, c.momentum.gamma) == (64, 4, 0.999)
        assert (c.optim.batch_size, c.optim.steps, c.cluster.sinkhorn_iters) == (48, 10_000, 3)
        assert (c.optim.lr_decoder, c.optim.lr_clip, c.optim.lr_prompts) == (2e-4, 2e-6, 2e-3)
        assert c.data.mask_size == 256 and c.optim.grad_clip == 0.01
    for name in PRESETS:
        load_config(name)


def test_overrides_and_yaml_roundtrip(tmp_path):
    cfg = load_config("tiny", ["prompts.num_clusters=32", "optim.lr_clip=2e-5", "backbone.pretrained=null"])
    assert cfg.prompts.num_clusters == 32 and cfg.optim.lr_clip == 2e-5 and cfg.backbone.pretrained is None
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    path.write_text("preset: tiny\nprompts:\n  length: 10\noptim:\n  lr_decoder: 1e-3\n")
    cfg2 = load_config(path)
    assert cfg2.prompts.length == 10 and cfg2.optim.lr_decoder == 1e-3 and cfg2.backbone.image_size == 64


@pytest.mark.parametrize(("override", "field"), [
    ("optim.lr_clip=-1", "optim.lr_clip"),
    ("prompts.num_clusters=1", "prompts.num_clusters"),
    ("prompts.num_clusters=abc", "prompts.num_clusters"),
    ("momentum.gamma=1.5", "momentum.gamma"),
    ("prompts.template=no placeholder", "prompts.template"),
    ("data.cutout_scale=[0.5, 0.1]", "data.cutout_scale"),
    ("optim.nonexistent=1", "optim.nonexistent"),
    ("decoder.groups=5", "decoder.groups"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config("tiny", [override])


def test_unknown_source():
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no_such_preset")
