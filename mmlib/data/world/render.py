"""world8k rendering: a :class:`~.scene.Scene` drawn as a ``photo`` (texture, light gradient, shadows, blur,
noise) or a ``cartoon`` (flat saturated colours, black outlines)."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .scene import Figure, LAYOUT, SKIN, Scene, Thing, _choice, _dog_geometry, _person_geometry


RGB = {  # photo palette; cartoon saturates it
    "red": (205, 35, 40), "blue": (35, 75, 205), "green": (35, 150, 55), "yellow": (240, 210, 35),
    "pink": (245, 135, 190), "black": (28, 27, 30), "white": (240, 240, 238),
    "orange": (245, 130, 25), "brown": (135, 85, 45),
}
HAIR_RGB = {"black": (22, 20, 20), "brown": (105, 62, 30), "blond": (232, 200, 110), "red": (185, 70, 30)}
DOG_RGB = {"brown": (140, 88, 45), "black": (32, 30, 30), "white": (238, 236, 230)}
BALL_RGB = {"red": (215, 30, 30), "blue": (30, 70, 220), "yellow": (225, 235, 50), "green": (30, 165, 60)}
OUTLINE = (15, 15, 15)
_BLUR = ImageFilter.Kernel((3, 3), [1, 2, 1, 2, 4, 2, 1, 2, 1])



# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------
def cartoon_rgb(rgb) -> tuple[int, int, int]:
    """The cartoon palette: photo colours with saturation raised by 40 %."""
    g = sum(rgb) / 3
    return tuple(int(min(255, max(0, g + (v - g) * 1.4))) for v in rgb)


class _Pen:
    """ImageDraw in image fractions; cartoon style outlines shapes in black and saturates colours."""

    def __init__(self, img: Image.Image, cartoon: bool):
        self.img, self.d, self.s, self.cartoon = img, ImageDraw.Draw(img), img.width, cartoon
        self.ow = max(1, round(self.s / 100))  # outline width, px

    def c(self, rgb):
        return cartoon_rgb(rgb) if self.cartoon else tuple(int(v) for v in rgb)

    def _px(self, pts):
        return [(x * self.s, y * self.s) for x, y in pts]

    def _edge(self, rgb, outline: bool):
        """Cartoon: black ink; photo: a darker rim of the same colour, as shading."""
        if not outline:
            return None
        return OUTLINE if self.cartoon else tuple(int(v * 0.72) for v in rgb)

    def poly(self, pts, rgb, outline=True):
        self.d.polygon(self._px(pts), fill=self.c(rgb), outline=self._edge(rgb, outline), width=self.ow)

    def ellipse(self, cx, cy, rx, ry, rgb, outline=True):
        box = [(cx - rx) * self.s, (cy - ry) * self.s, (cx + rx) * self.s, (cy + ry) * self.s]
        self.d.ellipse(box, fill=self.c(rgb), outline=self._edge(rgb, outline), width=self.ow)

    def line(self, pts, rgb, width):
        w = max(1, round(width * self.s))
        if self.cartoon and w >= 2:
            self.d.line(self._px(pts), fill=OUTLINE, width=w + 2 * self.ow, joint="curve")
        self.d.line(self._px(pts), fill=self.c(rgb), width=w, joint="curve")

    def rect(self, x0, y0, x1, y1, rgb, outline=True):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], rgb, outline)


def _sky(pen: _Pen, top, bottom, y1):
    """Vertical gradient from ``top`` to ``bottom`` down to row fraction ``y1`` (flat in cartoons)."""
    n = max(2, math.ceil(y1 * pen.s))
    t = np.linspace(0, 0 if pen.cartoon else 1, n)[:, None]
    rows = np.array(pen.c(top)) * (1 - t) + np.array(pen.c(bottom)) * t            # (n, 3)
    pen.img.paste(Image.fromarray(np.repeat(rows[:, None].astype(np.uint8), pen.s, axis=1)), (0, 0))


def _draw_background(pen: _Pen, bg: str, rng) -> None:
    h = LAYOUT[bg][0]
    if bg == "park":
        _sky(pen, (95, 150, 225), (185, 215, 240), h)
        for x in np.sort(rng.uniform(-0.05, 1.05, 9)):  # tree line on the horizon
            pen.ellipse(x, h - 0.02, rng.uniform(0.05, 0.1), rng.uniform(0.04, 0.08), (45, 95, 45), False)
        pen.rect(0, h, 1, 1, (75, 145, 55), False)
    elif bg == "beach":
        _sky(pen, (100, 170, 235), (200, 225, 245), h)
        pen.rect(0, h, 1, 0.56, (30, 100, 175), False)
        for y in np.linspace(h + 0.03, 0.53, 4):          # waves
            x = rng.uniform(0, 0.6)
            pen.line([(x, y), (x + rng.uniform(0.2, 0.4), y)], (210, 230, 245), 0.008)
        pen.rect(0, 0.56, 1, 0.6, (190, 175, 135), False)  # wet sand
        pen.rect(0, 0.6, 1, 1, (225, 205, 155), False)
    elif bg == "snow":
        _sky(pen, (120, 170, 230), (205, 225, 245), h)
        for x in np.sort(rng.uniform(-0.1, 1.1, 4)):
            top, w = rng.uniform(0.12, 0.3), rng.uniform(0.25, 0.45)
            pen.poly([(x - w, h + 0.01), (x, top), (x + w, h + 0.01)], (125, 135, 165))
            pen.poly([(x - w * 0.35, top + 0.35 * (h - top)), (x, top), (x + w * 0.35, top + 0.35 * (h - top))],
                     (245, 248, 252), outline=False)
        pen.rect(0, h, 1, 1, (238, 242, 250), False)
    elif bg == "street":
        _sky(pen, (160, 185, 215), (205, 215, 225), h)
        x = rng.uniform(-0.15, 0)
        while x < 1:
            w, top = rng.uniform(0.18, 0.3), rng.uniform(0.05, 0.3)
            wall = _choice(rng, [(150, 105, 85), (125, 125, 135), (185, 165, 130), (105, 85, 80)])
            pen.rect(x, top, x + w, h, wall)
            for wy in np.arange(top + 0.04, h - 0.06, 0.09):
                for wx in np.arange(x + 0.03, x + w - 0.05, 0.08):
                    pen.rect(wx, wy, wx + 0.04, wy + 0.05, (70, 85, 110), outline=False)
            x += w
        pen.rect(0, h, 1, 0.68, (175, 172, 165), False)  # sidewalk
        pen.rect(0, 0.68, 1, 1, (85, 85, 90), False)     # road
        for x in np.arange(rng.uniform(0, 0.2), 1, 0.3):
            pen.rect(x, 0.9, x + 0.14, 0.92, (230, 230, 225), outline=False)
    elif bg == "lake":
        _sky(pen, (110, 165, 230), (190, 215, 240), h)
        pen.rect(0, h - 0.06, 1, h + 0.01, (40, 85, 50), False)   # far shore
        for x in np.sort(rng.uniform(0, 1, 6)):
            pen.ellipse(x, h - 0.07, rng.uniform(0.04, 0.08), rng.uniform(0.04, 0.07), (35, 80, 45), False)
        pen.rect(0, h + 0.01, 1, 0.72, (45, 105, 150), False)
        for y in np.linspace(h + 0.05, 0.68, 5):
            x = rng.uniform(0, 0.7)
            pen.line([(x, y), (x + rng.uniform(0.1, 0.3), y)], (110, 160, 195), 0.006)
        pen.rect(0, 0.72, 1, 1, (95, 130, 60), False)
    elif bg == "night":
        _sky(pen, (8, 12, 35), (25, 35, 75), h)
        for _ in range(int(rng.integers(25, 45))):
            x, y, r = rng.uniform(0, 1), rng.uniform(0, h - 0.03), rng.uniform(0.003, 0.009)
            if r * pen.s < 0.75:                                   # a star is at least one pixel
                pen.d.point((x * pen.s, y * pen.s), fill=(255, 255, 240))
            else:
                pen.ellipse(x, y, r, r, (255, 255, 240), False)
        if rng.random() < 0.6:
            pen.ellipse(rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.25), 0.05, 0.05, (245, 240, 200))
        pen.rect(0, h, 1, 1, (30, 45, 35), False)
    elif bg == "indoor":
        wall = _choice(rng, [(215, 195, 160), (190, 200, 210), (200, 180, 190)])
        pen.rect(0, 0, 1, h, wall, False)
        x = rng.uniform(0.05, 0.6)
        pen.rect(x, 0.12, x + 0.3, 0.4, (170, 200, 230))               # window or picture
        pen.rect(0, h - 0.03, 1, h, (120, 90, 65), False)               # skirting board
        pen.rect(0, h, 1, 1, (150, 105, 65), False)                     # wooden floor
        for y in np.arange(h + 0.07, 1, 0.09):
            pen.line([(0, y), (1, y)], (125, 85, 50), 0.006)


def _draw_person(pen: _Pen, f: Figure) -> None:
    g = _person_geometry(f)
    s, cloth = f.height, RGB[f.colour]
    skin, hair = SKIN[f.skin], HAIR_RGB[f.hair]
    trousers = (60, 60, 65) if f.colour == "blue" else (50, 62, 105)
    legs = skin if f.garment == "dress" else trousers
    long_hair = f.kind in ("woman", "girl")
    hx, hy, r = *g["head"], g["r"]

    pen.line(g["back_arm"][1:], skin, 0.055 * s)
    pen.line(g["back_arm"][:2], cloth, 0.065 * s)
    pen.line(g["legs"], legs, 0.075 * s)
    if long_hair:
        pen.ellipse(hx - f.facing * 0.3 * r, hy + 0.35 * r, 1.1 * r, 1.4 * r, hair)
    pen.poly(g["dress" if f.garment == "dress" else "torso"], cloth)
    pen.ellipse(hx - f.facing * 0.1 * r, hy - 0.15 * r, 1.05 * r, 1.0 * r, hair)
    pen.ellipse(hx + f.facing * 0.12 * r, hy + 0.12 * r, 0.88 * r, 0.88 * r, skin)
    pen.line(g["front_arm"][:2], cloth, 0.065 * s)
    pen.line(g["front_arm"][1:], skin, 0.055 * s)


def _draw_dog(pen: _Pen, f: Figure) -> None:
    g = _dog_geometry(f)
    coat, s, r = DOG_RGB[f.colour], f.height, g["r"]
    dark = tuple(int(v * 0.72) for v in coat) if f.colour != "black" else (60, 55, 50)
    for i, leg in enumerate(g["legs"]):
        pen.line(leg, dark if i < 2 and not pen.cartoon else coat, 0.085 * s)
    pen.line(g["tail"], coat, 0.06 * s)
    pen.poly(g["body"], coat)
    pen.line(g["neck"], coat, 0.16 * s)
    pen.ellipse(*g["head"], r, r, coat)
    pen.ellipse(*g["snout"], 0.11 * s, 0.07 * s, coat)
    pen.ellipse(*g["ear"], 0.06 * s, 0.1 * s, dark)
    nose = (g["snout"][0] + f.facing * 0.09 * s, g["snout"][1] - 0.01 * s)
    pen.ellipse(*nose, 0.025 * s, 0.025 * s, (15, 12, 12), outline=False)


def _draw_thing(pen: _Pen, t: Thing) -> None:
    x, y, s = t.x, t.y, t.size
    if t.kind == "ball":
        pen.ellipse(x, y, s, s, BALL_RGB[t.colour])
    elif t.kind == "frisbee":
        pen.ellipse(x, y, s, s * 0.35, RGB[t.colour])
    elif t.kind == "tree":
        pen.rect(x - 0.035 * s, y - 0.5 * s, x + 0.035 * s, y, (95, 65, 40))
        pen.ellipse(x, y - 0.68 * s, 0.27 * s, 0.32 * s, (40, 115, 45))
    elif t.kind == "bench":
        wood = RGB["brown"]
        for dx in (-0.7, 0.7):
            pen.line([(x + dx * s, y), (x + dx * s, y - 0.5 * s)], (60, 55, 50), 0.06 * s)
        pen.rect(x - 0.85 * s, y - 0.35 * s, x + 0.85 * s, y - 0.27 * s, wood)
        pen.rect(x - 0.85 * s, y - 0.62 * s, x + 0.85 * s, y - 0.5 * s, wood)
    elif t.kind == "bicycle":
        wr, w = 0.3 * s, 0.05 * s
        for dx in (-0.45, 0.45):
            pen.d.ellipse([(x + dx * s - wr) * pen.s, (y - 2 * wr) * pen.s, (x + dx * s + wr) * pen.s, y * pen.s],
                          outline=(25, 25, 25), width=max(1, round(w * pen.s)))
        back, front, crank = (x - 0.45 * s, y - wr), (x + 0.45 * s, y - wr), (x + 0.05 * s, y - wr)
        seat, bars = (x - 0.05 * s, y - 0.75 * s), (x + 0.35 * s, y - 0.8 * s)
        pen.line([back, seat, crank, back], RGB[t.colour], w)
        pen.line([crank, bars, front], RGB[t.colour], w)


def render(scene: Scene, style: str = "photo", size: int = 128, rng: np.random.Generator | None = None) -> np.ndarray:
    """(size, size, 3) uint8 image of the scene, drawn at ``size`` directly.

    The layout (buildings, stars) comes from ``scene.seed`` so both styles show the same picture;
    ``rng`` (default: derived from the seed) only drives the photo's texture and noise.
    """
    if style not in ("photo", "cartoon"):
        raise ValueError(f"style must be 'photo' or 'cartoon', not {style!r}")
    photo = style == "photo"
    rng = np.random.default_rng([scene.seed, 1]) if rng is None else rng
    img = Image.new("RGB", (size, size))
    pen = _Pen(img, cartoon=not photo)
    _draw_background(pen, scene.background, np.random.default_rng(scene.seed))
    if photo:  # ground texture (low + high frequency) and soft shadows, before the figures
        img = _texture_and_shadows(img, scene, rng)
        pen = _Pen(img, cartoon=False)
    if scene.distractor:
        _draw_thing(pen, scene.distractor)
    for f in sorted(scene.figures, key=lambda f: f.y):   # far to near
        (_draw_dog if f.kind == "dog" else _draw_person)(pen, f)
    if scene.ball:
        _draw_thing(pen, scene.ball)
    if not photo:
        return np.asarray(img)
    if size >= 48:  # slight lens blur (binomial 3x3; none at thumbnail sizes)
        img = img.filter(_BLUR)
    x = np.asarray(img, np.float32)
    pos = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    grad = pos[None, :] * math.cos(scene.light_angle) + pos[:, None] * math.sin(scene.light_angle)  # (H, W)
    x = x * (scene.light * (1 + scene.light_slope * grad))[..., None]
    x += scene.noise * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _texture_and_shadows(img: Image.Image, scene: Scene, rng) -> Image.Image:
    size = img.width
    x = np.asarray(img, np.float32).copy()
    row = int(LAYOUT[scene.background][0] * size)
    k = max(2, size // 12)
    low = Image.fromarray(rng.normal(0, 1, (k, k)).astype(np.float32)).resize((size, size), Image.BILINEAR)
    amount = 0.04 if scene.background in ("snow", "indoor") else 0.09
    tex = 1 + amount * np.asarray(low)[row:] + 0.05 * rng.normal(0, 1, (size - row, size))
    x[row:] *= tex[..., None]
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    for f in scene.figures:
        w = f.height * (0.55 if f.kind == "dog" else 0.22)
        d.ellipse([(f.x - w) * size, (f.y - 0.018) * size, (f.x + w) * size, (f.y + 0.018) * size], fill=90)
    x *= 1 - np.asarray(mask, np.float32)[..., None] / 255
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))

