"""Drawing the synthetic images of the mini suite: shapes, named colours, backgrounds, noise.

Pure functions of a numpy random generator, so the same seed gives the same pixels. Shapes are
drawn as a supersampled mask (antialiased edges at 32x32), then the object colour is composited
over a gradient background and Gaussian noise is added.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
_SUPERSAMPLE = 4

Point = tuple[float, float]


def _regular(n: int, start: float = -math.pi / 2) -> list[Point]:
    return [(math.cos(start + 2 * math.pi * k / n), math.sin(start + 2 * math.pi * k / n)) for k in range(n)]


def _star(points: int = 5, inner: float = 0.45) -> list[Point]:
    out = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * k / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


_CROSS = [(-0.33, -1), (0.33, -1), (0.33, -0.33), (1, -0.33), (1, 0.33), (0.33, 0.33), (0.33, 1),
          (-0.33, 1), (-0.33, 0.33), (-1, 0.33), (-1, -0.33), (-0.33, -0.33)]  # fmt: skip
_ARROW = [(-1, -0.3), (0.2, -0.3), (0.2, -0.8), (1, 0), (0.2, 0.8), (0.2, 0.3), (-1, 0.3)]

# Unit outlines (radius 1 around the origin); later outlines cut holes ("ring", "crescent"). A square
# and a diamond differ only by rotation, and objects are rotated, so only one of them is a class; a
# hexagon is not one either: at the smallest size it is within half a pixel of a circle.
OUTLINES: dict[str, list[list[Point]]] = {
    "circle": [_regular(48)],
    "square": [[(x * 0.8, y * 0.8) for x, y in _regular(4, math.pi / 4)]],
    "triangle": [_regular(3)],
    "star": [_star()],
    "crescent": [_regular(48), [(0.8 * x + 0.45, 0.8 * y - 0.15) for x, y in _regular(48)]],
    "cross": [_CROSS],
    "ring": [_regular(48), [(0.55 * x, 0.55 * y) for x, y in _regular(48)]],
    "arrow": [_ARROW],
}
SHAPES: tuple[str, ...] = tuple(OUTLINES)

# Named object colours (RGB). Chosen far apart so a colour name is a fair label after jitter.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "purple": (140, 55, 190),
    "pink": (250, 135, 200),
    "brown": (125, 75, 35),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

_MIN_BG_DISTANCE = 110.0  # RGB distance between the object colour and each background corner
_YS, _XS = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / (IMAGE_SIZE - 1) - 0.5


@dataclass(frozen=True)
class Scene:
    """One object on a background; positions and radius in pixels of the 32x32 image."""

    shape: str
    color: tuple[int, int, int]
    cx: float
    cy: float
    radius: float
    rotation: float  # radians
    noise: float  # std of the Gaussian pixel noise (0-255 scale)


def shape_mask(shape: str, cx: float, cy: float, radius: float, rotation: float) -> np.ndarray:
    """Antialiased coverage in [0, 1] of ``shape`` at (cx, cy), shape (32, 32)."""
    big = IMAGE_SIZE * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cos, sin = math.cos(rotation), math.sin(rotation)
    for i, outline in enumerate(OUTLINES[shape]):
        pts = [
            (
                (cx + radius * (x * cos - y * sin)) * _SUPERSAMPLE,
                (cy + radius * (x * sin + y * cos)) * _SUPERSAMPLE,
            )
            for x, y in outline
        ]
        draw.polygon(pts, fill=255 if i == 0 else 0)  # later outlines cut holes
    small = mask.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def background(rng: np.random.Generator, avoid: tuple[int, int, int]) -> np.ndarray:
    """A linear gradient between two muted colours, both far from ``avoid``; float (32, 32, 3)."""
    corners = []
    while len(corners) < 2:
        gray = rng.uniform(20, 235)
        tint = rng.uniform(-45, 45, size=3)
        c = np.clip(gray + tint, 0, 255)
        if np.linalg.norm(c - np.asarray(avoid, dtype=np.float64)) >= _MIN_BG_DISTANCE:
            corners.append(c)
    angle = rng.uniform(0, 2 * math.pi)
    t = _XS * math.cos(angle) + _YS * math.sin(angle) + 0.5
    t = np.clip(t, 0, 1)[..., None]
    return (corners[0] * (1 - t) + corners[1] * t).astype(np.float32)


def jitter_color(rng: np.random.Generator, name: str, amount: float = 18.0) -> tuple[int, int, int]:
    base = np.asarray(COLORS[name], dtype=np.float64)
    return tuple(int(v) for v in np.clip(base + rng.uniform(-amount, amount, size=3), 0, 255).round())


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Draw ``scene``: background and noise come from ``rng``."""
    bg = background(rng, scene.color)
    alpha = shape_mask(scene.shape, scene.cx, scene.cy, scene.radius, scene.rotation)[..., None]
    img = bg * (1 - alpha) + np.asarray(scene.color, dtype=np.float32) * alpha
    if scene.noise > 0:
        img = img + rng.normal(0.0, scene.noise, size=img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    """An 8-bit RGB PNG of ``image``, deterministic (no timestamps, fixed zlib level).

    Written directly (signature, IHDR, one IDAT, IEND): for 32x32 images PIL's encoder costs
    more in Python overhead than the pixels, and generation time matters (the default sweep
    prepares the suite on first use).
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = np.concatenate(
        [np.zeros((h, 1), dtype=np.uint8), rgb.reshape(h, w * 3)], axis=1
    )  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def random_scene(
    rng: np.random.Generator,
    shape: str,
    color_name: str,
    radius: tuple[float, float] = (7.0, 13.0),
    center: Callable[[np.random.Generator, float], tuple[float, float]] | None = None,
) -> Scene:
    """A scene with random size, position, rotation and noise (position keeps most of it inside)."""
    r = float(rng.uniform(*radius))
    if center is None:
        lo, hi = 0.6 * r, IMAGE_SIZE - 0.6 * r
        cx, cy = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
    else:
        cx, cy = center(rng, r)
    return Scene(
        shape=shape,
        color=jitter_color(rng, color_name),
        cx=cx,
        cy=cy,
        radius=r,
        rotation=float(rng.uniform(0, 2 * math.pi)),
        noise=float(rng.uniform(0, 10)),
    )
