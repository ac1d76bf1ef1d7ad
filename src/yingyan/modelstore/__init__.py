"""Optional models installed on request: YuNet, MobileFaceNet and MiniFASNet.

`registry` lists what is supported (publisher's address, pinned sha256, licence), `store` the
model folder and how the engine finds an installed model, `fetch` installing one from its
publisher or from a local file. Nothing here runs unless asked: no download is implicit.
"""

from yingyan.modelstore.fetch import Installed, add, fetch
from yingyan.modelstore.registry import SUPPORTED, ModelAsset, SupportedModel, supported_model
from yingyan.modelstore.store import (
    ModelStatus,
    all_status,
    default_model_dir,
    installed_files,
    installed_model,
    model_status,
)

__all__ = [
    "SUPPORTED",
    "Installed",
    "ModelAsset",
    "ModelStatus",
    "SupportedModel",
    "add",
    "all_status",
    "default_model_dir",
    "fetch",
    "installed_files",
    "installed_model",
    "model_status",
    "supported_model",
]
