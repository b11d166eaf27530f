"""SynthScenes: seeded synthetic scenes (textured stuff regions, shaped things) with exact labels,
unlabeled masks and captions: a testbed small enough to pretrain a CLIP and run PixelCLIP on a CPU.

    from pixelclip.synth import CLASS_NAMES, scene_at, scene_masks
    scene = scene_at(seed=0, index=0)                       # image [H, W, 3], label [H, W], caption
    masks = scene_masks(scene, "kmeans", np.random.default_rng(0))   # [M, H, W] bool, unlabeled

Writers (SA-1B tars, an ADE20K-layout evaluation split) live in `pipelines.synth.scenes`.
"""

from .masks import MASK_MODES, kmeans_masks, oversegment, scene_masks
from .scenes import (
                     CLASS_NAMES,
                     NUM_STUFF,
                     STUFF_NAMES,
                     THING_NAMES,
                     Scene,
                     SceneConfig,
                     caption,
                     caption_words,
                     make_scene,
                     scene_at,
                     scene_rng,
)
from .textures import TEXTURES
from .things import THINGS, ThingClass

__all__ = ["CLASS_NAMES", "MASK_MODES", "NUM_STUFF", "STUFF_NAMES", "TEXTURES", "THINGS", "THING_NAMES", "Scene",
           "SceneConfig", "ThingClass", "caption", "caption_words", "kmeans_masks", "make_scene", "oversegment",
           "scene_at", "scene_masks", "scene_rng"]
