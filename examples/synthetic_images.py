"""Generated image-text data: PIL-drawn shapes (shape, colour, position, count) with template captions in
six languages. The word lists and templates below were written for this project (not taken from a
dataset); they aim at plain, grammatical captions, not at natural variety.

One image = one group; its caption in every language says the same thing, e.g.
en "two red circles on the left", de "zwei rote Kreise links", zh "左边有两个红色的圆形".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mlret_plugin.atomic import atomic_write_text
from mlret_plugin.training.images import save_image_atomic

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40),
           "white": (245, 245, 245)}
POSITIONS = ("left", "right", "top", "bottom")
COUNTS = (1, 2, 3)
LANGS = ("en", "de", "es", "tr", "vi", "zh")

# Per language: numbers, colours, positions, and a phrase function (count, colour, shape, position) -> caption.
_EN = {"n": {1: "one", 2: "two", 3: "three"},
       "shape": {"circle": ("circle", "circles"), "square": ("square", "squares"), "triangle": ("triangle", "triangles")},
       "pos": {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}}
_DE = {"n": {2: "zwei", 3: "drei"},
       # (singular with "ein", plural, gender): adjective endings -er (m) / -es (n) after "ein", -e in the plural
       "shape": {"circle": ("Kreis", "Kreise", "m"), "square": ("Quadrat", "Quadrate", "n"),
                 "triangle": ("Dreieck", "Dreiecke", "n")},
       "colour": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "white": "weiß"},
       "pos": {"left": "links", "right": "rechts", "top": "oben", "bottom": "unten"}}
_ES = {"n": {1: "un", 2: "dos", 3: "tres"},
       "shape": {"circle": ("círculo", "círculos"), "square": ("cuadrado", "cuadrados"),
                 "triangle": ("triángulo", "triángulos")},  # all masculine
       "colour": {"red": ("rojo", "rojos"), "green": ("verde", "verdes"), "blue": ("azul", "azules"),
                  "yellow": ("amarillo", "amarillos"), "white": ("blanco", "blancos")},
       "pos": {"left": "a la izquierda", "right": "a la derecha", "top": "arriba", "bottom": "abajo"}}
_TR = {"n": {1: "bir", 2: "iki", 3: "üç"},  # a noun after a number stays singular
       "shape": {"circle": "daire", "square": "kare", "triangle": "üçgen"},
       "colour": {"red": "kırmızı", "green": "yeşil", "blue": "mavi", "yellow": "sarı", "white": "beyaz"},
       "pos": {"left": "solda", "right": "sağda", "top": "üstte", "bottom": "altta"}}
_VI = {"n": {1: "một", 2: "hai", 3: "ba"},
       "shape": {"circle": "hình tròn", "square": "hình vuông", "triangle": "hình tam giác"},
       "colour": {"red": "màu đỏ", "green": "màu xanh lá", "blue": "màu xanh dương", "yellow": "màu vàng",
                  "white": "màu trắng"},
       "pos": {"left": "ở bên trái", "right": "ở bên phải", "top": "ở phía trên", "bottom": "ở phía dưới"}}
_ZH = {"n": {1: "一", 2: "两", 3: "三"},
       "shape": {"circle": "圆形", "square": "正方形", "triangle": "三角形"},
       "colour": {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "white": "白色"},
       "pos": {"left": "左边", "right": "右边", "top": "上边", "bottom": "下边"}}


def caption(lang: str, count: int, colour: str, shape: str, position: str) -> str:
    """The caption of an image with ``count`` ``colour`` ``shape``s at ``position``, in ``lang``."""
    if lang == "en":
        noun = _EN["shape"][shape][count > 1]
        return f"{_EN['n'][count]} {colour} {noun} {_EN['pos'][position]}"
    if lang == "de":
        single, plural, gender = _DE["shape"][shape]
        adj, pos = _DE["colour"][colour], _DE["pos"][position]
        if count == 1:
            return f"{'ein' if gender in 'mn' else 'eine'} {adj}{'er' if gender == 'm' else 'es'} {single} {pos}"
        return f"{_DE['n'][count]} {adj}e {plural} {pos}"
    if lang == "es":
        many = count > 1
        return f"{_ES['n'][count]} {_ES['shape'][shape][many]} {_ES['colour'][colour][many]} {_ES['pos'][position]}"
    if lang == "tr":
        return f"{_TR['pos'][position]} {_TR['n'][count]} {_TR['colour'][colour]} {_TR['shape'][shape]}"
    if lang == "vi":
        return f"{_VI['n'][count]} {_VI['shape'][shape]} {_VI['colour'][colour]} {_VI['pos'][position]}"
    if lang == "zh":
        return f"{_ZH['pos'][position]}有{_ZH['n'][count]}个{_ZH['colour'][colour]}的{_ZH['shape'][shape]}"
    raise ValueError(f"caption: unknown language {lang!r}; expected one of {LANGS}")


def draw(count: int, colour: str, shape: str, position: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """``count`` shapes of one colour in the ``position`` half of a dark canvas, with jittered size and place."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 50, 3)))
    pen = ImageDraw.Draw(image)
    half = size // 2
    box = {"left": (0, 0, half, size), "right": (half, 0, size, size), "top": (0, 0, size, half),
           "bottom": (0, half, size, size)}[position]
    # Slots along the half's long side so several shapes do not overlap.
    long_vertical = position in ("left", "right")
    span = (box[3] - box[1]) if long_vertical else (box[2] - box[0])
    slot = span // count
    r = int(rng.integers(max(3, slot // 5), max(4, min(slot, half) // 2 - 2) + 1))
    for k in range(count):
        if long_vertical:
            cx = (box[0] + box[2]) // 2 + int(rng.integers(-2, 3))
            cy = box[1] + slot * k + slot // 2 + int(rng.integers(-1, 2))
        else:
            cx = box[0] + slot * k + slot // 2 + int(rng.integers(-1, 2))
            cy = (box[1] + box[3]) // 2 + int(rng.integers(-2, 3))
        fill = COLOURS[colour]
        if shape == "circle":
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape == "square":
            pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def make_split(folder: str | Path, n_images: int, seed: int, prefix: str, langs=LANGS, size: int = 48) -> Path:
    """Draw ``n_images`` images into ``folder`` and write ``folder/rows.jsonl`` (one row per image x language,
    image paths relative to the folder). Returns the JSONL path."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n_images):
        spec = (int(rng.choice(COUNTS)), str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)),
                str(rng.choice(POSITIONS)))
        name = f"{prefix}{i:05d}.png"
        save_image_atomic(draw(*spec, rng=rng, size=size), folder / name)
        group = f"{prefix}{i:05d}"
        lines += [json.dumps({"group_id": group, "lang": lang, "query": caption(lang, *spec), "image": name,
                              "attributes": dict(zip(("count", "colour", "shape", "position"), spec))},
                             ensure_ascii=False) for lang in langs]
    return atomic_write_text(folder / "rows.jsonl", "\n".join(lines) + "\n")
