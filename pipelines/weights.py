"""Weights files a user names (a CLIP backbone's, DINO's, SAM's): checked on the driver before any Ray
task or worker starts, fetched once per node where they are used.

    uri = check_weights("s3://w/dino_vits16.pth", "masks.weights", opts)  # one-line WeightsError if unusable
    path = local_weights(uri, opts)   # on a worker: a local path (s3:// downloaded once into the node's cache)

A local path is made absolute on the driver (a relative path would resolve in each Ray worker's own
folder). s3:// files are cached under `$PIXELCLIP_CACHE` (default `~/.cache/pixelclip/weights`), named
by a hash of the URI, the object's size and its ETag, so a changed object is fetched again; a download
goes to a temporary name first, so a cut transfer never passes for the file.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

from pipelines import storage


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or not weights; the message names the file and the fix."""


def cache_dir() -> Path:
    return Path(os.environ.get("PIXELCLIP_CACHE", Path.home() / ".cache" / "pixelclip")) / "weights"


def absolute(uri: str) -> str:
    """s3:// as given; a local path (or file://) as an absolute path."""
    text = str(uri)
    if storage.is_s3(text):
        return text
    return str(Path(text.removeprefix("file://")).expanduser().resolve())


def local_weights(uri: str, opts: storage.StorageOptions | None = None, field: str = "weights") -> str:
    """A local path holding the weights of `uri` (downloaded into the node's cache when it is s3://)."""
    uri = absolute(uri)
    if not storage.is_s3(uri):
        if not Path(uri).is_file():
            raise WeightsError(f"{field}: {uri} does not exist: give the path of the weights file on this machine "
                               "(or an s3:// URI)")
        return uri
    fs, path = storage.fsspec_fs(uri, opts)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise WeightsError(f"{field}: {uri} does not exist: upload the weights there or fix the URI") from None
    except Exception as e:  # credentials, endpoint: the storage layer's own message
        raise WeightsError(f"{field}: cannot read {uri}: {type(e).__name__}: {e}") from None
    if info.get("type") == "directory":
        raise WeightsError(f"{field}: {uri} is a folder, not a weights file")
    key = hashlib.sha1(f"{uri}|{info.get('size')}|{info.get('ETag', info.get('etag', ''))}".encode()).hexdigest()
    local = cache_dir() / f"{key[:16]}-{uri.rsplit('/', 1)[-1]}"
    if not local.is_file():
        tmp = local.with_name(f".{local.name}.{os.getpid()}.part")
        try:
            storage.download(uri, tmp, opts)
            tmp.replace(local)  # atomic: a cut download never passes for the file
        finally:
            tmp.unlink(missing_ok=True)
    return str(local)


def _is_torchscript(path: str) -> bool:
    """An OpenAI CLIP .pt is a TorchScript archive (open_clip loads it); it holds code/ and constants.pkl."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def check_weights(uri: str, field: str, opts: storage.StorageOptions | None = None,
                  torchscript_ok: bool = False) -> str:
    """Fail fast with one line unless `uri` (local or s3://) is a readable state dict of tensors
    (.safetensors, or a torch file read with weights_only=True; a TorchScript archive too when
    `torchscript_ok`, as open_clip takes OpenAI's). Returns the absolute URI."""
    from pixelclip.data.masks import read_state_dict

    uri = absolute(uri)
    path = local_weights(uri, opts, field)
    if torchscript_ok and _is_torchscript(path):
        return uri
    try:
        tensors = read_state_dict(path)
    except Exception as e:  # safetensors, torch.load and our own check raise many types
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise WeightsError(f"{field}: {uri} is not a weights file ({reason}): give a .safetensors file or a "
                           "torch state dict (.pth/.pt) of tensors") from None
    if not tensors:
        raise WeightsError(f"{field}: {uri} holds no tensors")
    return uri


def _names_a_file(pretrained: str, name: str) -> bool:
    """Whether backbone.pretrained names a file (local or s3://) rather than an open_clip tag of `name`."""
    import open_clip

    from pixelclip.model.backbone import register_model_configs

    if storage.is_s3(pretrained) or pretrained.startswith("file://"):
        return True
    register_model_configs()
    if name in open_clip.list_models() and pretrained in open_clip.list_pretrained_tags_by_model(name):
        return False
    return "/" in pretrained or os.sep in pretrained or Path(pretrained).suffix != "" or Path(pretrained).exists()


def driver_model(model: dict, opts: storage.StorageOptions | None = None) -> dict:
    """A job's pixelclip config dict as the workers should get it: a backbone weights file checked
    (one-line WeightsError) and made absolute, and `backbone.name` the open_clip configuration that is
    built for those weights (`ViT-B-16` with OpenAI's tag -> `ViT-B-16-quickgelu`), so that MLflow
    parameters and checkpoints say what ran. Raises ValueError for an unknown name or tag."""
    from pixelclip.config import config_from_dict
    from pixelclip.model.backbone import resolve_model_name

    cfg = config_from_dict(model)
    b = cfg.backbone
    if b.pretrained and _names_a_file(b.pretrained, b.name):
        b.pretrained = check_weights(b.pretrained, "backbone.pretrained", opts, torchscript_ok=True)
        b.name = resolve_model_name(b.name, None)
    else:
        b.name = resolve_model_name(b.name, b.pretrained)
    return cfg.to_dict()


def driver_source(model: str, opts: storage.StorageOptions | None = None, field: str = "evaluate.model") -> str:
    """A `--model` string as the workers should get it: a checkpoint or an open_clip weights file
    checked once here (one-line WeightsError) and made absolute, so that an actor on any node, in any
    working folder, opens the same file. Registry models and open_clip tags are returned as given."""
    from pipelines.models import parse_source

    src = parse_source(model)
    if src.kind == "checkpoint":
        return check_weights(src.ref, field, opts)
    if src.kind == "openclip" and src.pretrained and _names_a_file(src.pretrained, src.ref):
        return f"openclip:{src.ref}:{check_weights(src.pretrained, field, opts, torchscript_ok=True)}"
    return model
