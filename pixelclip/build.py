"""The one builder: configuration -> wired `PixelCLIP` (and the open_clip tokenizer)."""

from __future__ import annotations

import torch

from .config import Config
from .model.backbone import (
    DenseEncoder,
    create_clip,
    default_trainable,
    preprocess_stats,
    resolve_model_name,
    set_trainable,
)
from .model.classes import ClassCentroids, FixedClasses
from .model.decoder import MaskDecoder
from .model.momentum import make_teacher
from .model.prompts import ClassPrompts, TextEncoder
from .task import PixelCLIP


def build_pixelclip(cfg: Config, device: str | torch.device = "cpu", weights_follow: bool = False) -> PixelCLIP:
    """Create the open_clip model named by `cfg.backbone` and wire student, teacher, frozen text
    encoder, learnable prompts and decoder around it. Random initialisation uses `cfg.seed` and
    leaves the global RNG untouched. The open_clip configuration built is the one whose activation the
    weights were trained with (`resolve_model_name`; `task.model_name` names it). `weights_follow`: the
    caller loads a checkpoint next, so open_clip's "initialized randomly" warning is not shown."""
    name = resolve_model_name(cfg.backbone.name, cfg.backbone.pretrained)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        clip, tokenizer = create_clip(name, cfg.backbone.pretrained, device, weights_follow=weights_follow)
        clip.eval()
        for p in clip.parameters():
            p.requires_grad_(False)
        set_trainable(clip.visual, cfg.backbone.trainable or default_trainable(clip.visual))
        mean, std = preprocess_stats(clip)
        student = DenseEncoder(clip.visual, mean, std)
        teacher = DenseEncoder(make_teacher(clip.visual), mean, std)
        text = TextEncoder(clip, tokenizer)
        p, mode = cfg.prompts, cfg.cluster.mode
        if mode == "prompts":
            prompts = ClassPrompts(text, p.num_clusters, p.length, p.template, seed=p.seed,
                                   init_words=p.init_words or None)
        elif mode == "centroids":
            prompts = ClassCentroids(p.num_clusters, student.out_dim, seed=p.seed, device=device)
        elif mode == "names":
            prompts = FixedClasses(text, cfg.cluster.class_names, p.template)
        else:
            prompts = None
        d = cfg.decoder
        decoder = MaskDecoder(d.hidden, d.mid, d.block_groups(), out_size=cfg.data.mask_size)
    task = PixelCLIP(clip, student, teacher, text, prompts, decoder, epsilon=cfg.cluster.epsilon,
                     sinkhorn_iters=cfg.cluster.sinkhorn_iters, image_size=cfg.backbone.image_size,
                     mask_size=cfg.data.mask_size, model_name=name, mode=cfg.cluster.mode,
                     sinkhorn_start=cfg.cluster.sinkhorn_start, teacher_mode=cfg.momentum.teacher_mode)
    return task.to(device)
