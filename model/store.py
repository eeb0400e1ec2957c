"""The model store: versioned models per product, plus the bundled default.

Layout: ``ROOT/<product>/v<N>.safetensors``, with ``ROOT/<product>/current``
naming the version in use (absent: the newest). Old versions are kept, so a
retrain can be rolled back. ROOT is the user data directory unless
``DSARAD_MODEL_STORE`` or an explicit root says otherwise.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_dir

from labelme_dsarad.resources import DEFAULT_MODEL

from .atomic_write import write_atomically
from .model_file import ModelFileError, ModelInfo, read_header

VERSION_PATTERN = re.compile(r"^v(\d+)\.safetensors$")
PRODUCT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BUNDLED_PRODUCT = "magnetic_tile"


def default_root() -> Path:
    return Path(os.environ.get("DSARAD_MODEL_STORE") or Path(user_data_dir("labelme-dsarad")) / "models")


def check_product_name(product: str) -> str:
    if not PRODUCT_PATTERN.match(product):
        raise ValueError(f"product name {product!r}: use letters, digits, '_', '-', '.' (at most 64)")
    return product


@dataclass
class StoredModel:
    product: str
    version: int
    path: Path
    bundled: bool = False
    current: bool = False

    def info(self) -> ModelInfo:
        return read_header(self.path)


class ModelStore:
    def __init__(self, root: os.PathLike | str | None = None):
        self.root = Path(root) if root is not None else default_root()

    def versions(self, product: str) -> list[StoredModel]:
        folder = self.root / check_product_name(product)
        found = []
        if folder.is_dir():
            for entry in folder.iterdir():
                match = VERSION_PATTERN.match(entry.name)
                if match:
                    found.append(StoredModel(product, int(match.group(1)), entry))
        found.sort(key=lambda stored: stored.version)
        current = self.current_version(product, found)
        for stored in found:
            stored.current = stored.version == current
        return found

    def current_version(self, product: str, versions: list[StoredModel]) -> int | None:
        marker = self.root / product / "current"
        if marker.is_file():
            text = marker.read_text().strip()
            if text.isdigit() and any(stored.version == int(text) for stored in versions):
                return int(text)
        return versions[-1].version if versions else None

    def products(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir() if entry.is_dir() and self.versions(entry.name))

    def next_path(self, product: str) -> tuple[int, Path]:
        versions = self.versions(product)
        version = versions[-1].version + 1 if versions else 1
        return version, self.root / product / f"v{version}.safetensors"

    def set_current(self, product: str, version: int) -> None:
        if not any(stored.version == version for stored in self.versions(product)):
            raise ValueError(f"product {product!r} has no version {version}")
        write_atomically(self.root / product / "current", f"{version}\n".encode())

    def resolve(self, product: str | None = None, version: int | None = None) -> StoredModel:
        """The model to use: a product's current (or given) version, else the bundled default."""
        if product is None:
            return bundled_model()
        versions = self.versions(product)
        if version is not None:
            for stored in versions:
                if stored.version == version:
                    return stored
            raise ModelFileError(self.root / product, f"no version {version} of product {product!r}")
        for stored in versions:
            if stored.current:
                return stored
        if product == BUNDLED_PRODUCT and DEFAULT_MODEL.is_file():
            return bundled_model()
        raise ModelFileError(self.root / product, f"no model for product {product!r}; train one with 'dsarad train'")

    def all_models(self) -> list[StoredModel]:
        models = [stored for product in self.products() for stored in self.versions(product)]
        if DEFAULT_MODEL.is_file():
            models.append(bundled_model())
        return models


def bundled_model() -> StoredModel:
    return StoredModel(BUNDLED_PRODUCT, 0, DEFAULT_MODEL, bundled=True)
