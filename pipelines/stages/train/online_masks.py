"""Masks computed on each training crop, inside the training stream: DINO k-means on GPU actors.

    pixelclip train --data s3://data/ready/ ... --masks dino --dino-weights s3://w/dino_deitsmall16_pretrain.pth

This is the paper's DINO recipe as the authors run it: masks come from the very crop the step trains
on, not from the whole image. The stream is
    read_parquet -> decode + crop + flip + photometrics (CPU tasks, `pipelines.stages.train.reader.decode_row`, which
    also emits the weak view at the crop's own resolution, 640 px in both recipes) -> `DinoCropStage`
    (a Ray Data actor pool: DINO ViT-S/16 + k-means, k=16, per crop, `DinoMasker.crop_masks`)
    -> Ray Train workers,
so every batch reaches the trainer with a partition of its own crops into (at most) 16 masks.

GPU placement: on a GPU cluster each actor takes `gpus_per_actor` of a GPU (default 0.25) and each
training worker the rest of its GPU (1 - 0.25): one actor beside every worker, on the same device,
with no GPU of their own to buy. DINO ViT-S/16 at 640 px is about 37 GFLOP a crop, under a tenth of a
ViT-B/16 student's forward and backward at 320 px per image, so a quarter of a GPU is ample; the
GPU benchmark (`bench/gpu.sh`) measures masks per second on one actor. On CPU the actors take
`cpus_per_actor` CPUs each, beside the workers'.

The records' own masks are not read; any training-ready shards serve, including `prepare --source
images` (images without masks). The whole-image offline masks of `prepare --source dino` remain: they
are computed once per image (at 640x640, whatever its aspect) and each crop sees the subset of those
16 segments that falls in it, coarser than the per-crop masks the paper trained with.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from pipelines import storage
from pipelines.stages.train.job import OnlineMasksConfig
from pipelines.weights import check_weights, local_weights


class OnlineMasks:
    """The DINO stage of a training stream, resolved against the cluster: `attach(ds, cfg)` appends it.

    Checks the weights on the driver (one-line `WeightsError`) when built."""

    def __init__(self, cfg: OnlineMasksConfig, workers: int, use_gpu: bool,
                 opts: storage.StorageOptions | None = None, seed: int = 0):
        self.cfg, self.use_gpu, self.opts, self.seed = cfg, use_gpu, opts, seed
        self.actors = cfg.actors or workers
        self.weights = check_weights(cfg.weights, "train.masks.weights", opts) if cfg.weights else None

    @property
    def worker_gpu(self) -> float:
        """The GPU share each training worker asks for (the rest of its GPU is the actor's)."""
        return 1.0 - self.cfg.gpus_per_actor

    @property
    def cpus(self) -> float:
        """CPUs the actors hold on a CPU cluster (on GPUs they take only their GPU share)."""
        return 0.0 if self.use_gpu else self.actors * self.cfg.cpus_per_actor

    def attach(self, ds, model_cfg):
        import ray

        c = self.cfg
        grid = max(16, model_cfg.data.crop // 16 * 16) // 16  # DINO's 16 px patches across a crop
        if c.k > grid * grid:
            raise ValueError(f"train.masks.k={c.k} clusters need as many DINO patches per crop: data.crop "
                             f"{model_cfg.data.crop} gives {grid}x{grid} of 16 px; lower train.masks.k")
        return ds.map_batches(
            DinoCropStage, batch_size=c.batch_size, batch_format="numpy",
            fn_constructor_kwargs={"weights": self.weights, "arch": c.arch, "k": c.k,
                                   "mask_size": model_cfg.data.mask_size, "crop": model_cfg.data.crop,
                                   "seed": self.seed, "opts": storage.for_ray(self.opts)},
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_gpus=c.gpus_per_actor if self.use_gpu else 0, num_cpus=0 if self.use_gpu else c.cpus_per_actor)

    def describe(self) -> dict:
        return {**asdict(self.cfg), "actors": self.actors, "weights": self.weights}


class DinoCropStage:
    """Ray Data actor: crops [B, 3, C, C] uint8 (the "crop" column) -> packed masks [B, k, M, M/8] of
    each crop (the "masks" and "num_masks" columns the trainer reads); the crop column is dropped.
    Weights are fetched once per node (s3:// -> the node's cache)."""

    def __init__(self, weights: str | None, arch: str, k: int, mask_size: int, crop: int, seed: int, opts):
        import torch

        from pixelclip.data.masks import DinoMasker

        path = local_weights(weights, opts, "train.masks.weights") if weights else None
        device = "cuda" if torch.cuda.is_available() else "cpu"
        size = max(16, crop // 16 * 16)  # DinoMasker's own resize target; crop_masks takes any square crop
        self.masker = DinoMasker.from_weights(path, arch=arch, k=k, image_size=size, device=device, seed=seed)
        self.mask_size = mask_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        crops = torch.from_numpy(np.stack(list(batch["crop"])))  # [B, 3, C, C] uint8
        masks = self.masker.crop_masks(crops, self.mask_size).cpu().numpy()  # [B, k, M, M] bool
        out = {key: value for key, value in batch.items() if key not in ("crop", "masks", "num_masks")}
        out["masks"] = np.packbits(masks, axis=-1)  # [B, k, M, M/8]
        out["num_masks"] = np.full(len(crops), masks.shape[1], dtype=np.int64)
        return out
