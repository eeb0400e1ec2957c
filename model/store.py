"""The model store: versioned models per product, plus the bundled default.

Layout: ``ROOT/<product>/v<N>.safetensors``, with ``ROOT/<product>/current``
naming the version in use (``N``, or ``bundled``). Only ``dsarad use`` (and
the plugin's *Use vN*) writes that marker: training and retraining store a
new version and leave the model in use as it was. Without a marker the model
in use is the bundled one for the bundled product, else the product's first
stored version (the one ``dsarad train`` made first, often its only one).
ROOT is the user data directory unless ``DSARAD_MODEL_STORE`` or an explicit
root says otherwise.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir

from labelme_dsarad.resources import DEFAULT_MODEL

from .atomic_write import write_atomically
from .model_file import ModelFileError, ModelInfo, read_header

VERSION_PATTERN = re.compile(r"^v(\d+)\.safetensors$")
VERSION_ARGUMENT = re.compile(r"^[vV]?(\d+)$")
PRODUCT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BUNDLED_PRODUCT = "magnetic_tile"
BUNDLED: Literal["bundled"] = "bundled"  # the bundled model's version, as people write it and as the marker holds it
Version = int | Literal["bundled"]

# Why a model is the one in use (``ModelStore.in_use``), as ``dsarad models`` says it.
CHOSEN = "chosen with 'dsarad use'"
DEFAULT_BUNDLED = "default: bundled"
ONLY_VERSION = "only version"
DEFAULT_FIRST = "default: first version"


def default_root() -> Path:
    return Path(os.environ.get("DSARAD_MODEL_STORE") or Path(user_data_dir("labelme-dsarad")) / "models")


def check_product_name(product: str) -> str:
    if not PRODUCT_PATTERN.match(product):
        raise ValueError(f"product name {product!r}: use letters, digits, '_', '-', '.' (at most 64)")
    return product


def parse_version(text: str) -> Version:
    """``bundled``, ``v2`` or ``2``."""
    if text.strip().lower() == BUNDLED:
        return BUNDLED
    match = VERSION_ARGUMENT.match(text.strip())
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"version {text!r}: give a stored version like v2 (or 2), or {BUNDLED}")
    return int(match.group(1))


@dataclass
class StoredModel:
    product: str
    version: int  # 0 for the bundled model, which sorts before every stored version
    path: Path
    bundled: bool = False
    current: bool = False

    @property
    def label(self) -> str:
        return BUNDLED if self.bundled else f"v{self.version}"

    @property
    def name(self) -> str:
        """As label files and the plugin name it (``LoadedModel.name``): "magnetic_tile v2", "magnetic_tile bundled"."""
        return f"{self.product} {self.label}"

    def info(self) -> ModelInfo:
        return read_header(self.path)


class ModelStore:
    def __init__(self, root: os.PathLike | str | None = None):
        self.root = Path(root) if root is not None else default_root()

    def stored_versions(self, product: str) -> list[StoredModel]:
        """The product's stored versions, oldest first; ``current`` not yet set."""
        folder = self.root / check_product_name(product)
        found = []
        if folder.is_dir():
            for entry in folder.iterdir():
                match = VERSION_PATTERN.match(entry.name)
                if match:
                    found.append(StoredModel(product, int(match.group(1)), entry))
        return sorted(found, key=lambda stored: stored.version)

    def versions(self, product: str) -> list[StoredModel]:
        """The product's stored versions, oldest first, the one in use marked ``current``."""
        found = self.stored_versions(product)
        in_use = self._in_use(product, found)
        for stored in found:
            stored.current = in_use is not None and not in_use[0].bundled and stored.version == in_use[0].version
        return found

    def has_bundled(self, product: str) -> bool:
        return product == BUNDLED_PRODUCT and DEFAULT_MODEL.is_file()

    def marker(self, product: str) -> Version | None:
        """What the product's ``current`` file names (None: no file, or not a version)."""
        path = self.root / product / "current"
        if not path.is_file():
            return None
        try:
            return parse_version(path.read_text())
        except (ValueError, UnicodeDecodeError):
            return None

    def _in_use(self, product: str, stored: list[StoredModel]) -> tuple[StoredModel, str] | None:
        chosen = self.marker(product)
        if chosen == BUNDLED and self.has_bundled(product):
            return bundled_model(current=True), CHOSEN
        for candidate in stored:
            if candidate.version == chosen:
                return candidate, CHOSEN
        # No marker, or one naming a version that is gone.
        if self.has_bundled(product):
            return bundled_model(current=True), DEFAULT_BUNDLED
        if stored:
            return stored[0], ONLY_VERSION if len(stored) == 1 else DEFAULT_FIRST
        return None

    def in_use(self, product: str) -> tuple[StoredModel, str]:
        """The product's model in use and why (``CHOSEN``, ``DEFAULT_BUNDLED``, ``ONLY_VERSION``, ``DEFAULT_FIRST``)."""
        found = self._in_use(product, self.stored_versions(product))
        if found is None:
            raise ModelFileError(self.root / product, f"no model for product {product!r}; train one with 'dsarad train'")
        found[0].current = True
        return found

    def products(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir()
                      if entry.is_dir() and PRODUCT_PATTERN.match(entry.name) and self.stored_versions(entry.name))

    def next_path(self, product: str) -> tuple[int, Path]:
        versions = self.stored_versions(product)
        version = versions[-1].version + 1 if versions else 1
        return version, self.root / product / f"v{version}.safetensors"

    def set_current(self, product: str, version: Version) -> StoredModel:
        """Make ``version`` (a stored one, or ``bundled``) the product's model in use; return it."""
        stored = self.resolve(product, version)
        folder = self.root / check_product_name(product)
        folder.mkdir(parents=True, exist_ok=True)  # choosing the bundled model of a product with nothing stored
        write_atomically(folder / "current", f"{version}\n".encode())
        stored.current = True
        return stored

    def resolve(self, product: str | None = None, version: Version | None = None) -> StoredModel:
        """The model to use: a product's given version, else the one in use; without a product, the bundled default."""
        if product is None:
            return bundled_model()
        if version is None:
            return self.in_use(product)[0]
        if version == BUNDLED:
            if self.has_bundled(product):
                return bundled_model()
        else:
            for stored in self.versions(product):
                if stored.version == version:
                    return stored
        known = ([BUNDLED] if self.has_bundled(product) else []) + [f"v{s.version}" for s in self.stored_versions(product)]
        label = version if version == BUNDLED else f"v{version}"
        raise ModelFileError(self.root / product, f"product {product!r} has no version {label}"
                             + (f" (it has: {', '.join(known)})" if known else " (no models stored)"))

    def all_models(self) -> list[StoredModel]:
        """Every stored version and the bundled model, the one in use for each product marked ``current``."""
        models = [stored for product in self.products() for stored in self.versions(product)]
        if DEFAULT_MODEL.is_file():
            in_use = self._in_use(BUNDLED_PRODUCT, self.stored_versions(BUNDLED_PRODUCT))
            models.append(bundled_model(current=in_use is not None and in_use[0].bundled))
        return models


def bundled_model(current: bool = False) -> StoredModel:
    return StoredModel(BUNDLED_PRODUCT, 0, DEFAULT_MODEL, bundled=True, current=current)
