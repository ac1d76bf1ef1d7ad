"""The gallery service of a configured deployment: one factory for every process that opens it
(service workers, camera workers, stations), so they all see the same store, index and keys."""

from __future__ import annotations

from yingyan.gallery.index import IndexSpec
from yingyan.gallery.service import GalleryService
from yingyan.privacy import DEFAULT_KEY_FILE, ENV_KEY, TemplateCipher, key_source, open_cipher
from yingyan.privacy.files import private_dir
from yingyan.settings import Settings
from yingyan.store import open_database


def service_cipher(settings: Settings) -> TemplateCipher:
    """Templates are encrypted by default: without a configured key, a keyring is created in
    the data folder (production should keep it elsewhere: YINGYAN_KEY_FILE)."""
    environ = {ENV_KEY: settings.template_key} if settings.template_key else {}
    default = settings.data_dir / DEFAULT_KEY_FILE
    return open_cipher(key_source(settings.key_file, environ, default))


def open_gallery_service(settings: Settings) -> GalleryService:
    """Database (migrated), keyring and index of `settings`; the caller closes the service
    and its database (`service.close(); service.db.close()`)."""
    private_dir(settings.data_dir)  # database, keyring, index files, initial admin key
    db = open_database(settings.database_url, settings.data_dir)
    cipher = service_cipher(settings)
    milvus = None
    if settings.index == "milvus":
        milvus = settings.milvus_uri or str(settings.data_dir / "milvus.db")
    return GalleryService(
        db, settings.index_dir, IndexSpec(kind=settings.index), milvus, cipher=cipher
    )
