"""Images of image-text rows: checked when the rows are built, decoded only when a batch is read.

A row's image is a file path (decoded lazily) or a PIL image (written to an image folder so the dataset
holds paths only: an epoch never keeps all images in memory). Errors name the row and the file.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mlret_plugin.atomic import atomic_path


def check_image_file(path: str | Path, where: str) -> None:
    """Fail naming ``where`` (e.g. ``rows.jsonl:12 (group g3, lang de)``) when ``path`` is not a readable image.

    ``Image.verify`` reads the header and checks the file's structure without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image file {path} does not exist")
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{where}: image file {path} is not a readable image ({type(e).__name__}: {e})") from e


def load_image(source: str | Path | Image.Image, where: str = "image") -> Image.Image:
    """An RGB PIL image from a path or a PIL image; errors name ``where`` and the file."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image file {path} does not exist")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # convert() decodes, so the file is closed afterwards
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{where}: image file {path} is not a readable image ({type(e).__name__}: {e})") from e


def save_image_atomic(image: Image.Image, path: Path) -> Path:
    """Write ``image`` as PNG to ``path`` through a temporary file (an interrupted write leaves no file)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


__all__ = ["check_image_file", "load_image", "save_image_atomic"]
