"""PixelCLIP: fine-tune CLIP's image encoder for open-vocabulary segmentation with unlabeled masks.

A library of pure PyTorch + open_clip: no Ray, MLflow or storage clients (those live in
`pipelines/`). Nothing here does work at import time.
"""

from .build import build_pixelclip
from .config import Config, ConfigError, load_config
from .task import PixelCLIP, StepOutput
from .train import Trainer

__all__ = ["Config", "ConfigError", "PixelCLIP", "StepOutput", "Trainer", "build_pixelclip", "load_config"]
__version__ = "0.1.0"
