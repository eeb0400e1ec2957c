"""Bundled data: the default model, sample images and icons."""

from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = RESOURCES_DIR / "models" / "magnetic_tile_compact.safetensors"
SAMPLES_DIR = RESOURCES_DIR / "samples"
