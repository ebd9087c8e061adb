"""world8k: a procedural, deterministic stand-in for Flickr8k (Hodosh et al. 2013).

Each image is a :class:`Scene` -- a background, a main group of one to three people or dogs
sharing their attributes, an optional second subject, ball and distractor object, and lighting --
rendered as a ``photo`` (texture, light gradient, shadows, blur, noise) or a ``cartoon`` (flat
saturated colours, black outlines). :func:`describe` writes five captions the way different
annotators would (synonyms, level of detail, word order) and records for each caption exactly
which canonical attributes (:data:`ATTRIBUTES`) it states, so a generated image can later be
checked against the caption that produced it. See ``../shared/WORLD.md`` for what the world is for.

Folder layout (the Kaggle Flickr8k one): ``Images/w0000123_<8 hex>.jpg``, ``captions.txt``
(``image,caption``, CSV-quoted where a caption holds a comma, 5 lines per image) and
``scenes.jsonl`` (per image: the scene, its full attributes and the 5 captions with what each states).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import statistics
from bisect import bisect
from collections import Counter
from dataclasses import asdict, dataclass
from itertools import accumulate
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..paths import data_dir

BACKGROUNDS = ("park", "beach", "snow", "street", "lake", "night", "indoor")
PEOPLE = ("man", "woman", "boy", "girl")
KINDS = PEOPLE + ("dog",)
CLOTHING = ("red", "blue", "green", "yellow", "pink", "black", "white", "orange")
DOG_COLOURS = ("brown", "black", "white")
HAIR = ("black", "brown", "blond", "red")
ACTIONS = ("standing", "walking", "running", "jumping", "sitting", "catching")  # catching: dogs
BALL_COLOURS = ("red", "blue", "yellow", "green")
OBJECTS = ("frisbee", "bicycle", "tree", "bench")

# canonical attribute -> allowed values; "main" = the front group, "second" = the other subject
ATTRIBUTES: dict[str, list] = {
    "background": list(BACKGROUNDS),
    "category": ["person", "dog"],          # of the main subject ("a person", "a child" state only this)
    "subject": list(KINDS),                 # kind of the main subject
    "count": [1, 2, 3],                     # size of the main group
    "clothing_colour": list(CLOTHING),
    "garment": ["top", "dress"],            # shirt / t-shirt / top / jacket -> top
    "hair_colour": list(HAIR),
    "dog_colour": list(DOG_COLOURS),
    "action": list(ACTIONS),
    "ball": [False, True],
    "ball_colour": list(BALL_COLOURS),
    "object": ["none", *OBJECTS],           # the distractor
    "second_subject": ["none", *KINDS],
    "second_clothing_colour": list(CLOTHING),
    "second_dog_colour": list(DOG_COLOURS),
}

RGB = {  # photo palette; cartoon saturates it
    "red": (205, 35, 40), "blue": (35, 75, 205), "green": (35, 150, 55), "yellow": (240, 210, 35),
    "pink": (245, 135, 190), "black": (28, 27, 30), "white": (240, 240, 238),
    "orange": (245, 130, 25), "brown": (135, 85, 45),
}
HAIR_RGB = {"black": (22, 20, 20), "brown": (105, 62, 30), "blond": (232, 200, 110), "red": (185, 70, 30)}
DOG_RGB = {"brown": (140, 88, 45), "black": (32, 30, 30), "white": (238, 236, 230)}
BALL_RGB = {"red": (215, 30, 30), "blue": (30, 70, 220), "yellow": (225, 235, 50), "green": (30, 165, 60)}
SKIN = ((240, 200, 170), (200, 150, 110), (140, 95, 65))
OUTLINE = (15, 15, 15)
_BLUR = ImageFilter.Kernel((3, 3), [1, 2, 1, 2, 4, 2, 1, 2, 1])


@dataclass
class Figure:
    """A person or a dog. Coordinates are fractions of the image side; (x, y) is where it stands."""
    kind: str                 # man | woman | boy | girl | dog
    colour: str               # clothing colour (people) or coat colour (dog)
    action: str
    x: float
    y: float
    height: float             # standing height (people) / height to the top of the head (dog)
    facing: int = 1           # +1 looks right, -1 left
    garment: str = "top"      # people: top | dress
    hair: str = ""            # people: hair colour
    skin: int = 0             # index into SKIN


@dataclass
class Thing:
    """A ball or a distractor; (x, y) is its centre (ball, frisbee) or where it stands."""
    kind: str
    colour: str
    x: float
    y: float
    size: float               # radius (ball, frisbee) or height/width scale


@dataclass
class Scene:
    background: str
    figures: list[Figure]     # figures[:count] = main group (front), figures[count] = second subject
    count: int = 1
    ball: Thing | None = None
    distractor: Thing | None = None
    light: float = 1.0        # global brightness (photo)
    light_angle: float = 0.0  # direction of the brightness gradient, radians
    light_slope: float = 0.0  # strength of the gradient
    noise: float = 3.0        # sensor noise sigma in 0..255 units (photo)
    seed: int = 0             # layout of the background (buildings, stars) and photo noise

    @property
    def main(self) -> Figure:
        return self.figures[0]

    @property
    def second(self) -> Figure | None:
        return self.figures[self.count] if len(self.figures) > self.count else None

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        d = dict(d)
        d["figures"] = [Figure(**f) for f in d["figures"]]
        for k in ("ball", "distractor"):
            d[k] = Thing(**d[k]) if d.get(k) else None
        return cls(**d)


def scene_attributes(scene: Scene) -> dict:
    """Every canonical attribute the scene has (the labels an oracle classifier learns)."""
    m, s = scene.main, scene.second
    a = {"background": scene.background, "category": "dog" if m.kind == "dog" else "person",
         "subject": m.kind, "count": scene.count, "action": m.action, "ball": scene.ball is not None,
         "object": scene.distractor.kind if scene.distractor else "none",
         "second_subject": s.kind if s else "none"}
    if m.kind == "dog":
        a["dog_colour"] = m.colour
    else:
        a.update(clothing_colour=m.colour, garment=m.garment, hair_colour=m.hair)
    if scene.ball:
        a["ball_colour"] = scene.ball.colour
    if s:
        a["second_dog_colour" if s.kind == "dog" else "second_clothing_colour"] = s.colour
    return a


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------
# background -> (first ground row, nearest and farthest feet rows), fractions of the height
LAYOUT = {"park": (0.42, 0.62, 0.95), "beach": (0.36, 0.64, 0.95), "snow": (0.50, 0.64, 0.95),
          "street": (0.56, 0.70, 0.95), "lake": (0.42, 0.80, 0.96), "night": (0.60, 0.74, 0.96),
          "indoor": (0.58, 0.72, 0.96)}
DISTRACTORS = {"park": OBJECTS, "beach": ("frisbee", "bicycle"), "snow": ("tree",),
               "street": ("bicycle", "tree", "bench"), "lake": ("tree", "bench"),
               "night": ("tree", "bench", "bicycle"), "indoor": ()}
DOG_ACTIONS = {"standing": 3, "walking": 2.5, "running": 6, "jumping": 3, "sitting": 2, "catching": 2.5}
PERSON_ACTIONS = {"standing": 5, "walking": 4, "running": 4, "jumping": 3, "sitting": 3}


def _choice(rng: np.random.Generator, options, weights=None):
    """One of ``options`` (uniform, or by ``weights``); one uniform draw, cheaper than rng.choice."""
    options = list(options)
    cum = list(accumulate(weights if weights is not None else [1] * len(options)))
    return options[min(bisect(cum, rng.random() * cum[-1]), len(options) - 1)]


def sample_scene(rng: np.random.Generator, **fixed) -> Scene:
    """A random scene; any canonical attribute in ``fixed`` (e.g. ``subject="girl"``) is kept."""
    unknown = set(fixed) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attributes {sorted(unknown)}; known: {sorted(ATTRIBUTES)}")

    def pick(name, options, weights=None):
        if name in fixed:
            if fixed[name] not in options:
                raise ValueError(f"{name}={fixed[name]!r} impossible here; choose from {list(options)}")
            return fixed[name]
        return _choice(rng, options, weights)

    bg = pick("background", BACKGROUNDS, (24, 16, 14, 16, 10, 8, 12))
    kinds = {"person": PEOPLE, "dog": ("dog",)}.get(fixed.get("category"), KINDS)
    kind = pick("subject", kinds, [{"man": 22, "woman": 14, "boy": 14, "girl": 13, "dog": 37}[k] for k in kinds])
    count = pick("count", (1, 2, 3), (78, 17, 5))
    acts = DOG_ACTIONS if kind == "dog" else PERSON_ACTIONS
    action = pick("action", tuple(acts), tuple(acts.values()))
    main = _sample_figure(rng, kind, action, pick)
    figures = [main]
    for _ in range(count - 1):  # the group shares what captions say about it
        figures.append(Figure(**{**asdict(main), "skin": int(rng.integers(3))}))

    second_options = ("none",) + (() if count > 1 else tuple(k for k in KINDS if k != kind))
    second_kind = pick("second_subject", second_options,
                       [60 if k == "none" else (15 if k == "dog" else 10) for k in second_options])
    if second_kind != "none":
        s_acts = DOG_ACTIONS if second_kind == "dog" else PERSON_ACTIONS
        s_action = _choice(rng, [a for a in s_acts if a != "catching"])
        figures.append(_sample_figure(rng, second_kind, s_action, pick, prefix="second_"))
    scene = Scene(background=bg, figures=figures, count=count, seed=int(rng.integers(2**31)))
    _place(scene, rng)

    if action == "catching" or "ball_colour" in fixed:
        has_ball = pick("ball", (True,))
    else:
        has_ball = pick("ball", (False, True), (0.86, 0.14))
    if has_ball:
        scene.ball = _place_ball(main, pick("ball_colour", BALL_COLOURS), rng)
    objects = DISTRACTORS[bg]
    obj = pick("object", ("none",) + objects, (0.55,) + (0.45 / max(1, len(objects)),) * len(objects))
    if obj != "none":
        scene.distractor = _place_distractor(scene, obj, rng)
    night = bg == "night"
    scene.light = float(rng.uniform(0.75, 0.95) if night else rng.uniform(0.8, 1.15))
    scene.light_angle = float(rng.uniform(0, 2 * math.pi))
    scene.light_slope = float(rng.uniform(0.0, 0.3))
    scene.noise = float(rng.uniform(1.5, 7.0))
    return scene


def _sample_figure(rng, kind: str, action: str, pick, prefix: str = "") -> Figure:
    """One figure; ``pick(name, options, weights)`` keeps fixed attributes (names with ``prefix``)."""
    facing = _choice(rng, (-1, 1))
    if kind == "dog":
        return Figure(kind, pick(prefix + "dog_colour", DOG_COLOURS, (3, 3.5, 3.5)), action, 0.5, 0.9, 0.3, facing)
    garments = ("top", "dress") if kind in ("woman", "girl") else ("top",)
    return Figure(kind, pick(prefix + "clothing_colour", CLOTHING), action, 0.5, 0.9, 0.5, facing,
                  garment=pick(prefix + "garment", garments, (6, 4)[:len(garments)]),
                  hair=pick(prefix + "hair_colour", HAIR, (4, 4, 3, 1)),
                  skin=_choice(rng, range(3), (0.6, 0.25, 0.15)))


def _size(kind: str) -> float:
    """Standing height relative to an adult."""
    return {"man": 1.0, "woman": 0.94, "boy": 0.76, "girl": 0.74, "dog": 0.56}[kind]


def _place(scene: Scene, rng) -> None:
    """Feet positions and heights: the main group in front, the second subject behind it."""
    _, near, far = LAYOUT[scene.background]
    n = len(scene.figures)
    slots = np.linspace(0.22, 0.78, n) + rng.uniform(-0.06, 0.06, n) if n > 1 else rng.uniform(0.3, 0.7, 1)
    order = rng.permutation(n)
    group_scale = {1: 1.0, 2: 0.82, 3: 0.7}[min(n, 3)]
    y_main = rng.uniform(near + 0.45 * (far - near), far)
    for i, f in enumerate(scene.figures):
        behind = i >= scene.count
        f.y = float(rng.uniform(near, y_main - 0.03) if behind else np.clip(y_main + rng.normal(0, 0.012), near, 0.97))
        depth = 0.7 + 0.3 * (f.y - near) / (far - near)     # perspective: lower = nearer = bigger
        f.height = float(min(rng.uniform(0.62, 0.8) * depth * group_scale * _size(f.kind), f.y - 0.05))
        half_width = f.height * (0.75 if f.kind == "dog" else 0.5 if f.action == "sitting" else 0.2)
        f.x = float(np.clip(slots[order[i]], half_width + 0.02, 0.98 - half_width))
    if scene.count > 1 and rng.random() < 0.7:       # groups often move together
        for f in scene.figures[1:scene.count]:
            f.facing = scene.main.facing


def _place_ball(f: Figure, colour: str, rng) -> Thing:
    r = 0.036 + 0.012 * f.height
    if f.action == "catching":
        mx, my = _dog_geometry(f)["mouth"]
        return Thing("ball", colour, mx + f.facing * r * 0.6, my - r * 0.9, r)
    reach = 0.75 * f.height if f.kind == "dog" else 0.22 * f.height
    x = float(np.clip(f.x + f.facing * reach * rng.uniform(0.9, 1.4), r, 1 - r))
    return Thing("ball", colour, x, f.y - r, r)


def _place_distractor(scene: Scene, kind: str, rng) -> Thing:
    _, near, _ = LAYOUT[scene.background]
    candidates = rng.uniform(0.1, 0.9, 8)
    x = max(candidates, key=lambda c: min(abs(c - f.x) for f in scene.figures))  # away from figures
    y = float(rng.uniform(near - 0.04, near + 0.05))
    size = {"tree": rng.uniform(0.4, 0.55), "bench": rng.uniform(0.16, 0.22),
            "bicycle": rng.uniform(0.15, 0.2), "frisbee": rng.uniform(0.035, 0.05)}[kind]
    colour = {"tree": "green", "bench": "brown"}.get(kind) or _choice(rng, ("red", "blue", "yellow", "orange"))
    return Thing(kind, colour, float(x), y, float(size))


# ---------------------------------------------------------------------------------------------
# geometry of figures (local units: 1 = figure height, x forward, y up; angles from straight down)
# ---------------------------------------------------------------------------------------------
# (back leg: thigh, shin), (front leg), (back arm: upper, fore), (front arm), lift, torso lean
PERSON_POSES = {
    "standing": ((-4, -4), (4, 4), (-10, -6), (10, 6), 0.0, 0),
    "walking": ((-22, -32), (24, 8), (22, 40), (-22, -12), 0.0, 4),
    "running": ((-42, -105), (58, 8), (55, 125), (-50, -15), 0.03, 14),
    "jumping": ((35, -55), (65, -15), (160, 172), (150, 178), 0.17, 0),
    "sitting": ((85, 95), (88, 92), (25, 60), (35, 70), 0.0, -6),
}
# pitch (deg, nose up), lift, front legs, back legs (deg from down, world frame), tail (deg up)
DOG_POSES = {
    "standing": (0, 0.0, (4, -4), (4, -4), 45),
    "walking": (0, 0.0, (20, -12), (14, -18), 35),
    "running": (-4, 0.05, (60, 35), (-55, -30), 10),
    "jumping": (22, 0.32, (75, 55), (-50, -30), 15),
    "catching": (48, 0.24, (55, 35), (-15, -3), -5),
    "sitting": (38, 0.0, (0, 6), (85, 95), 20),
}


def _polar(angle_deg: float, length: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.sin(a), -math.cos(a)]) * length


def _rot(v, deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([v[0] * math.cos(a) - v[1] * math.sin(a), v[0] * math.sin(a) + v[1] * math.cos(a)])


def _to_image(f: Figure, pts: dict) -> dict:
    """Local points (units of f.height) -> image fractions; lists of points are polygons/lines."""
    def conv(p):
        if isinstance(p, list):
            return [conv(q) for q in p]
        return (f.x + f.facing * p[0] * f.height, f.y - p[1] * f.height)
    return {k: conv(v) for k, v in pts.items()}


def _person_geometry(f: Figure) -> dict:
    child = f.kind in ("boy", "girl")
    r, thigh, shin, torso = (0.105, 0.21, 0.2, 0.27) if child else (0.085, 0.24, 0.23, 0.3)
    upper, fore = (0.14, 0.13) if child else (0.16, 0.15)
    back_leg, front_leg, back_arm, front_arm, lift, lean = PERSON_POSES[f.action]
    hip = np.zeros(2)
    knees = [hip + _polar(a, thigh) for a, _ in (back_leg, front_leg)]
    feet = [k + _polar(b, shin) for k, (_, b) in zip(knees, (back_leg, front_leg))]
    ground = min(min(p[1] for p in feet), -0.04)      # sitting: the seat touches the ground
    shift = np.array([0.0, lift - ground])
    hip, knees, feet = hip + shift, [k + shift for k in knees], [p + shift for p in feet]
    up = _rot((0, 1), lean * -1)                       # positive lean tilts forward
    shoulder = hip + up * torso
    side = _rot(up, -90)                               # points forward
    sw, hw = (0.13, 0.11) if not child else (0.125, 0.1)
    elbows = [shoulder + _polar(a, upper) for a, _ in (back_arm, front_arm)]
    hands = [e + _polar(b, fore) for e, (_, b) in zip(elbows, (back_arm, front_arm))]
    hem = hip - up * 0.22
    return _to_image(f, {
        "head": shoulder + up * (0.02 + r),
        "legs": [feet[0], knees[0], hip, knees[1], feet[1]],
        "back_arm": [shoulder, elbows[0], hands[0]], "front_arm": [shoulder, elbows[1], hands[1]],
        "torso": [shoulder + side * sw, shoulder - side * sw, hip - side * hw, hip + side * hw],
        "dress": [shoulder + side * sw, shoulder - side * sw, hem - side * 0.17, hem + side * 0.17],
    }) | {"r": r * f.height}


def _dog_geometry(f: Figure) -> dict:
    pitch, lift, front, back, tail = DOG_POSES[f.action]
    attach = {"front": [(0.3, -0.08), (0.37, -0.08)], "back": [(-0.3, -0.08), (-0.37, -0.08)]}
    legs = []
    for name, angles in (("front", front), ("back", back)):
        for a, ang in zip(attach[name], angles):
            top = _rot(a, pitch)
            legs.append([top, top + _polar(ang, 0.34)])
    rear = _rot((-0.42, -0.14), pitch)
    ground = min([l[1][1] for l in legs] + [rear[1]])
    centre = np.array([0.0, lift - ground])
    head = centre + _rot((0.5, 0.28), pitch)
    body = [centre + _rot((0.46 * math.cos(t), 0.17 * math.sin(t)), pitch)
            for t in np.linspace(0, 2 * math.pi, 18, endpoint=False)]
    tail_base = centre + _rot((-0.44, 0.06), pitch)
    return _to_image(f, {
        "body": body, "head": head, "neck": [centre + _rot((0.3, 0.08), pitch), head],
        "snout": head + _rot((0.14, -0.045), pitch * 0.5), "ear": head + _rot((-0.06, 0.02), pitch),
        "mouth": head + _rot((0.24, -0.05), pitch * 0.5),
        "legs": [[centre + p for p in l] for l in legs][::-1],  # far legs first
        "tail": [tail_base, tail_base + _polar(pitch - 90 - tail, 0.3)],
    }) | {"r": 0.15 * f.height}


SEED_PROMPT_SCENES_ATTRS = {  # the three dresses share one background: only the colour differs
    "a girl in a pink dress": dict(subject="girl", clothing_colour="pink", garment="dress",
                                   background="park"),
    "a girl in a black dress": dict(subject="girl", clothing_colour="black", garment="dress",
                                   background="park"),
    "a girl in a green dress": dict(subject="girl", clothing_colour="green", garment="dress",
                                   background="park"),
    "a small white dog jumping to catch a tennis ball": dict(subject="dog", dog_colour="white",
                                                             action="catching", ball_colour="yellow"),
    "a person on a snowy mountain": dict(subject="man", background="snow"),
    "a man on the beach": dict(subject="man", background="beach"),
    "a person under a night sky with stars": dict(subject="woman", background="night"),
    "a girl in an orange top in the street": dict(subject="girl", clothing_colour="orange",
                                                  garment="top", background="street"),
}


def scene_for_prompt(seed: int | None = None, **attrs) -> Scene:
    """A clean scene with the given canonical attributes: one standing subject, no second subject,
    distractor or ball unless asked for; the rest sampled from ``seed`` (default: from ``attrs``)."""
    defaults = {"count": 1, "second_subject": "none", "object": "none", "action": "standing",
                "ball": "ball_colour" in attrs or attrs.get("action") == "catching"}
    if seed is None:
        seed = int(hashlib.blake2b(json.dumps(attrs, sort_keys=True).encode(), digest_size=4).hexdigest(), 16)
    return sample_scene(np.random.default_rng(seed), **{**defaults, **attrs})


SEED_PROMPT_SCENES: dict[str, Scene] = {p: scene_for_prompt(**a) for p, a in SEED_PROMPT_SCENES_ATTRS.items()}


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


# ---------------------------------------------------------------------------------------------
# captions
# ---------------------------------------------------------------------------------------------
# Phrase lists are "|"-separated (repeat a phrase to make it likelier); a leading "?" marks a
# vague phrase that states no attribute ("near the water": beach or lake).
# kind -> [(pre-adjective, noun, plural, states the kind, weight)]
NOUNS = {
    "man": [("", "man", "men", 1, 10), ("", "guy", "guys", 1, 1), ("", "person", "people", 0, 2),
            ("young", "man", "men", 1, 2), ("older", "man", "men", 1, 0.5), ("", "male", "males", 1, 0.3),
            ("", "gentleman", "gentlemen", 1, 0.3), ("", "adult", "adults", 0, 0.2)],
    "woman": [("", "woman", "women", 1, 10), ("", "lady", "ladies", 1, 1.2), ("", "person", "people", 0, 2),
              ("young", "woman", "women", 1, 2.5), ("", "female", "females", 1, 0.3),
              ("older", "woman", "women", 1, 0.3)],
    "boy": [("", "boy", "boys", 1, 5), ("little", "boy", "boys", 1, 3), ("young", "boy", "boys", 1, 3),
            ("small", "boy", "boys", 1, 0.7), ("", "child", "children", 0, 1.5), ("", "kid", "kids", 0, 0.7),
            ("little", "kid", "kids", 0, 0.3), ("", "toddler", "toddlers", 0, 0.3),
            ("", "youngster", "youngsters", 0, 0.2)],
    "girl": [("", "girl", "girls", 1, 5), ("little", "girl", "girls", 1, 3), ("young", "girl", "girls", 1, 3),
             ("small", "girl", "girls", 1, 0.7), ("", "child", "children", 0, 1.5), ("", "kid", "kids", 0, 0.7),
             ("little", "kid", "kids", 0, 0.3), ("", "toddler", "toddlers", 0, 0.3),
             ("", "youngster", "youngsters", 0, 0.2)],
    "dog": [("", "dog", "dogs", 1, 12), ("", "puppy", "puppies", 1, 1), ("small", "dog", "dogs", 1, 1),
            ("big", "dog", "dogs", 1, 1), ("large", "dog", "dogs", 1, 1), ("little", "dog", "dogs", 1, 0.6),
            ("", "pup", "pups", 1, 0.3), ("fluffy", "dog", "dogs", 1, 0.3), ("shaggy", "dog", "dogs", 1, 0.3),
            ("furry", "dog", "dogs", 1, 0.3), ("happy", "dog", "dogs", 1, 0.3), ("", "animal", "animals", 0, 0.2)],
}
# action -> "-ing form/3rd person singular/plural|..."; catching phrases hold the ball as {b}
VERBS = {
    "standing": "standing/stands/stand|standing/stands/stand|standing/stands/stand|"
                "standing still/stands still/stand still|standing around/stands around/stand around|"
                "standing up/stands up/stand up",
    "walking": "walking/walks/walk|walking/walks/walk|walking/walks/walk|strolling/strolls/stroll|"
               "wandering/wanders/wander|walking along/walks along/walk along|taking a walk/takes a walk/take a walk",
    "running": "running/runs/run|running/runs/run|running/runs/run|running/runs/run|running/runs/run|"
               "running fast/runs fast/run fast|running quickly/runs quickly/run quickly|"
               "sprinting/sprints/sprint|racing/races/race|dashing/dashes/dash|jogging/jogs/jog|rushing/rushes/rush",
    "jumping": "jumping/jumps/jump|jumping/jumps/jump|leaping/leaps/leap|"
               "jumping in the air/jumps in the air/jump in the air|jumping up/jumps up/jump up|hopping/hops/hop|"
               "jumping high/jumps high/jump high",
    "sitting": "sitting/sits/sit|sitting/sits/sit|sitting down/sits down/sit down|"
               "sitting on the ground/sits on the ground/sit on the ground|resting/rests/rest",
    "catching": "catching {b}/catches {b}/catch {b}|jumping to catch {b}/jumps to catch {b}/jump to catch {b}|"
                "leaping for {b}/leaps for {b}/leap for {b}|jumping for {b}/jumps for {b}/jump for {b}|"
                "leaping up to catch {b}/leaps up to catch {b}/leap up to catch {b}|"
                "going for {b}/goes for {b}/go for {b}",
}
VAGUE_VERBS = "playing/plays/play|playing/plays/play|playing/plays/play|playing outside/plays outside/play outside|" \
              "having fun/has fun/have fun|playing around/plays around/play around"
PLACES = {
    "park": "on the grass|on the grass|in the grass|in the grass|through the grass|on a grassy field|"
            "in a grassy field|across a grassy field|in a grassy area|in the park|in a park|on the lawn|"
            "on a grassy lawn|in a field|in a green field|through a grassy field|in the yard|in a backyard|"
            "?outside|?outdoors",
    "beach": "on the beach|on the beach|on the sand|on a sandy beach|at the beach|along the shore|by the ocean|"
             "on the shore|by the sea|near the ocean|at the seaside|on the beach near the water|in the sand|"
             "?near the water|?near the water|?by the water|?at the edge of the water|?next to the water",
    "snow": "in the snow|in the snow|in the snow|on a snowy mountain|on a snowy hill|through the snow|"
            "in the snowy mountains|on the snow|on a snow covered hill|in deep snow|on a snowy slope|"
            "in front of snowy mountains|?outside|?on a mountain",
    "street": "on the street|on the street|on a city street|down the street|on the sidewalk|on a city sidewalk|"
              "in the city|in front of a building|in front of some buildings|in an urban area|on a street|"
              "on the road|near some buildings|?outside",
    "lake": "by the lake|by the lake|near a lake|next to a lake|on the shore of a lake|in front of the lake|"
            "at the lake|beside a lake|on the bank of a lake|near a pond|?by the water|?by the water|?near the water|"
            "?in front of the water|?next to the water",
    "night": "at night|at night|under a night sky|under the stars|under a starry sky|at night under the stars|"
             "in the dark|outside at night|under the night sky|beneath the stars|under a dark sky full of stars|"
             "in the night",
    "indoor": "in a room|inside|indoors|in a living room|inside a house|on a wooden floor|on the floor|"
              "in a house|inside a building|in a bright room|on a hardwood floor",
}
GARMENTS = {"top": [("shirt", 10), ("t-shirt", 2), ("top", 2), ("jacket", 2), ("sweater", 1), ("coat", 1),
                    ("sweatshirt", 0.5), ("hoodie", 0.5), ("tank top", 0.5)],
            "dress": [("dress", 6), ("sundress", 0.5)]}
TINTS = {"red": "bright", "yellow": "bright", "pink": "bright", "orange": "bright", "green": "bright",
         "blue": "light|dark|bright"}
HAIR_WORDS = {"black": "dark-haired|black-haired|with black hair|with dark hair",
              "brown": "brown-haired|with brown hair|brunette",
              "blond": "blond|blonde|blond-haired|with blond hair|with blonde hair", "red": "red-haired|with red hair"}
OBJECT_WORDS = {"tree": "tree|large tree|tree", "bench": "bench|park bench|wooden bench",
                "bicycle": "bike|bicycle|parked bike", "frisbee": "frisbee|frisbee|toy"}
NUMBERS = {1: "a", 2: "two", 3: "three"}
FILLERS = {  # detail an annotator adds that states no attribute; {pos} = his/her
    "dog": "with its tongue out|with its ears flying|happily|with its tail up|on a sunny day",
    "jumping": "with {pos} arms in the air|with arms raised|happily|on a sunny day",
    "person": "looking at the camera|and smiling|smiling|on a sunny day|in the sunshine|happily",
}


def _say(rng, text: str) -> tuple[str, bool]:
    """A random phrase from a "|" list, and whether it states its attribute."""
    p = _choice(rng, text.split("|"))
    return p.lstrip("?"), not p.startswith("?")


def _w(rng, items):
    """Choose from [(..., weight)] by the last field."""
    return _choice(rng, items, [i[-1] for i in items])


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _subject(f: Figure, count: int, rng, v: float, prefix: str = "") -> tuple[str, str, dict]:
    """(noun phrase, post-modifier, stated) for a figure or its group; stated keys get ``prefix``."""
    adj, noun, plural, specific, _ = _w(rng, NOUNS[f.kind])
    if count > 1 and f.kind != "dog" and rng.random() < 0.35:
        adj, noun, plural, specific = "", "person", "people", 0
    stated = {} if prefix else {"category": "dog" if f.kind == "dog" else "person", "count": count}
    if specific:
        stated[prefix + "subject"] = f.kind
    words, post = [adj], []
    if f.kind == "dog":
        if rng.random() < 0.35 + 0.55 * v:
            words.append(f.colour)
            stated[prefix + "dog_colour"] = f.colour
    else:
        if not prefix and rng.random() < 0.08 + 0.22 * v:
            hair = _say(rng, HAIR_WORDS[f.hair])[0]
            (post if hair.startswith("with") else words).append(hair)
            stated["hair_colour"] = f.hair
        if rng.random() < 0.25 + 0.55 * v:
            stated[prefix + "clothing_colour"] = f.colour
            colour = f.colour
            if f.colour in TINTS and rng.random() < 0.1:
                colour = f"{_say(rng, TINTS[f.colour])[0]} {f.colour}"
            if prefix or rng.random() < 0.15:   # "in red": the garment stays unsaid
                post.append(f"{_choice(rng, ['in', 'dressed in', 'wearing'])} {colour}")
            else:
                garment = _w(rng, GARMENTS[f.garment])[0]
                stated["garment"] = f.garment
                clothes = (f"{colour} {garment}{'es' if garment.endswith('dress') else 's'}" if count > 1
                           else f"{_a(colour)} {colour} {garment}")
                jeans = " and jeans" if f.garment == "top" and f.colour != "blue" and rng.random() < 0.1 else ""
                post.append(f"{_choice(rng, ['in', 'in', 'wearing'])} {clothes}{jeans}")
    words = [w for w in words + [plural if count > 1 else noun] if w]
    det = NUMBERS[count] if count > 1 or prefix or rng.random() < 0.9 else "the"
    det = _a(words[0]) if det == "a" else det
    return " ".join([det] + words), " ".join(post), stated


def _ball(scene: Scene, rng, v: float, stated: dict) -> str:
    b = scene.ball
    stated["ball"] = True
    if rng.random() < 0.25 + 0.6 * v:
        stated["ball_colour"] = b.colour
        return "a tennis ball" if b.colour == "yellow" and rng.random() < 0.4 else f"a {b.colour} ball"
    return "a ball"


def _verb(f: Figure, count: int, form: str, scene: Scene, rng, v: float, stated: dict) -> str:
    """Verb phrase in ``form`` ('is' -> 'is running', 's' -> 'runs', 'ing' -> 'running')."""
    if f.action not in ("sitting", "catching") and rng.random() < 0.18:
        ing, third, base = _say(rng, VAGUE_VERBS)[0].split("/")
    else:
        ing, third, base = _say(rng, VERBS[f.action])[0].split("/")
        stated["action"] = f.action
    if "{b}" in ing:
        ball = _ball(scene, rng, v, stated)
        ing, third, base = (t.format(b=ball) for t in (ing, third, base))
    if form == "ing":
        return ing
    if form == "is":
        return ("are " if count > 1 else "is ") + ing
    return base if count > 1 else third


def _filler(f: Figure, count: int, background: str, rng) -> str:
    if count > 1:
        return "together"
    kind = "dog" if f.kind == "dog" else "jumping" if f.action == "jumping" else "person"
    text = _say(rng, FILLERS[kind])[0].format(pos="his" if f.kind in ("man", "boy") else "her")
    return "" if "sun" in text and background in ("night", "indoor") else text


def _caption(scene: Scene, rng, v: float) -> tuple[str, dict]:
    """One annotator's caption at verbosity ``v`` in [0, 1] and the attributes it states."""
    m, s, n = scene.main, scene.second, scene.count
    core, post, stated = _subject(m, n, rng, v)
    said: dict = {}                       # what the verb phrase and its extras state
    form = _choice(rng, ("is", "s", "ing"), (0.5, 0.33, 0.17))
    parts = [_verb(m, n, form, scene, rng, v, said)] if rng.random() > 0.06 else []
    if parts and scene.ball and "ball" not in said and rng.random() < 0.15 + 0.55 * v:
        parts.append(_choice(rng, ("with", "with", "next to", "near")) + " " + _ball(scene, rng, v, said))
    if parts and scene.distractor and rng.random() < 0.05 + 0.35 * v:
        thing = _say(rng, OBJECT_WORDS[scene.distractor.kind])[0]
        parts.append(f"{_choice(rng, ('near', 'next to', 'by'))} a {thing}")
        said["object"] = scene.distractor.kind
    verb = " ".join(parts)
    place = ""
    if rng.random() < 0.5 + 0.5 * v:
        place, specific = _say(rng, PLACES[scene.background])
        if specific:
            stated["background"] = scene.background

    subject = f"{core} , {post} ," if post.startswith("wearing") and rng.random() < 0.15 else f"{core} {post}"
    if s and rng.random() < 0.3 + 0.6 * v:
        s_core, s_post, s_stated = _subject(s, 1, rng, v * 0.7, prefix="second_")
        stated.update(s_stated)
        other = f"{s_core} {s_post}"
        template = rng.integers(4) if verb else 0
        if template == 0:                 # no verb: "A man and a black dog on the beach"
            said, verb = {}, ""
            text = f"{subject} and {other} {place}"
        elif template == 1 and form != "ing":
            text = f"{subject} {verb} {place} while {other} {_choice(rng, ('watches', 'looks on'))}"
        elif template == 2 and form == "ing":
            text = f"{other} watches {subject} {verb} {place}"
        else:
            text = f"{subject} {verb} {_choice(rng, ('near', 'next to', 'with'))} {other} {place}"
    elif place and rng.random() < 0.05:
        text = f"{place} , {subject} {verb}"
    elif form == "ing" and verb and rng.random() < 0.15:
        text = f"there is {subject} {verb} {place}"
    else:
        text = f"{subject} {verb} {place}"
    if verb and rng.random() < 0.06 + 0.24 * v:
        text += " " + _filler(m, n, scene.background, rng)
    stated.update(said)
    text = " ".join(text.split())
    text = text if rng.random() < 0.07 else text[0].upper() + text[1:]
    return (text + " ." if rng.random() < 0.9 else text), stated


def describe(scene: Scene, rng: np.random.Generator) -> list[tuple[str, dict]]:
    """Five captions, one per annotator (terse to detailed), each with the attributes it states."""
    verbosity = np.clip(rng.permutation([0.15, 0.4, 0.6, 0.8, 1.0]) + rng.uniform(-0.1, 0.1, 5), 0, 1)
    return [_caption(scene, rng, float(v)) for v in verbosity]


_STOP = frozenset("a an the in on is and with of are to at his her its their while through down up by "
                  "for into from as it there near next over front".split())


def caption_stats(captions: list[str], top: int = 20) -> dict:
    """Length and vocabulary statistics; words are whitespace tokens (so " ." counts, as usual for
    Flickr8k), types are lower-cased tokens stripped of punctuation."""
    lengths = [len(c.split()) for c in captions]
    counts = Counter(t for c in captions for w in c.lower().split() if (t := w.strip('.,!?"\'')))
    return {"n_captions": len(captions), "mean_words": round(statistics.mean(lengths), 2),
            "median_words": statistics.median(lengths), "min_words": min(lengths), "max_words": max(lengths),
            "vocab_size": len(counts), "types_ge5": sum(c >= 5 for c in counts.values()),
            "top_content_words": [w for w, _ in counts.most_common() if w not in _STOP][:top]}


# ---------------------------------------------------------------------------------------------
# data set folders
# ---------------------------------------------------------------------------------------------
def image_name(seed: int, index: int) -> str:
    """Flickr-like, sorted in index order: ``w0000123_1a2b3c4d.jpg``."""
    return f"w{index:07d}_{hashlib.blake2b(f'{seed}:{index}'.encode(), digest_size=4).hexdigest()}.jpg"


def example(seed: int, index: int) -> tuple[Scene, list[tuple[str, dict]]]:
    """The scene and captions of image ``index`` (independent of worker order and style)."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng)
    return scene, describe(scene, rng)


def _make_image(job: tuple) -> tuple[str, list[str], str]:
    seed, index, size, style, folder = job
    scene, captions = example(seed, index)
    name = image_name(seed, index)
    # 4:4:4 chroma keeps the colour of 3-pixel balls; quality 95 as the issue asks
    Image.fromarray(render(scene, style, size)).save(Path(folder) / name, quality=95, subsampling=0)
    record = {"image": name, "index": index, "style": style, "scene": asdict(scene),
              "attributes": scene_attributes(scene),
              "captions": [{"caption": c, "stated": st} for c, st in captions]}
    return name, [c for c, _ in captions], json.dumps(record, sort_keys=True)


def generate(out_dir: str | Path, n_images: int = 8091, size: int = 128, seed: int = 0,
             style: str = "photo", workers: int = 2) -> Path:
    """Write a world8k folder; the same arguments give the same bytes.

    Built in a temporary sibling folder and renamed at the end, so a crash never leaves a folder
    that looks complete. Cost (8,091 images, 128 px, photo): 65 s of worker CPU (8 ms per image:
    sampling + captions 1, render 4, JPEG 1.5, bookkeeping), i.e. about 35 s with 2 workers on 2
    idle cores; 248 s wall measured while the 2 cores were shared with ~12 busy processes.
    JPEGs are ~13 KB each (106 MB in all).
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; delete it to regenerate")
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "Images").mkdir(parents=True)
    jobs = [(seed, i, size, style, str(tmp / "Images")) for i in range(n_images)]
    try:
        with open(tmp / "captions.txt", "w", newline="") as cap, open(tmp / "scenes.jsonl", "w") as sc:
            writer = csv.writer(cap, lineterminator="\n")
            writer.writerow(["image", "caption"])

            def write(results):  # in index order, whichever worker made them
                for name, captions, record in results:
                    writer.writerows([name, c] for c in captions)
                    sc.write(record + "\n")

            if workers > 1:
                # fork (as torch's DataLoader does): workers inherit the imported modules
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                with ctx.Pool(workers) as pool:
                    write(pool.imap(_make_image, jobs, chunksize=64))
            else:
                write(map(_make_image, jobs))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def validate(folder: Path, n_images: int) -> None:
    """Raise if the folder is not a complete world8k of ``n_images`` images."""
    n_files = sum(1 for _ in (folder / "Images").glob("*.jpg"))
    with open(folder / "captions.txt") as f:
        n_lines = sum(1 for _ in f) - 1
    with open(folder / "scenes.jsonl") as f:
        n_scenes = sum(1 for _ in f)
    if (n_files, n_lines, n_scenes) != (n_images, 5 * n_images, n_images):
        raise RuntimeError(f"{folder}: {n_files} images, {n_lines} captions, {n_scenes} scenes; expected "
                           f"{n_images}, {5 * n_images}, {n_images}. Delete the folder to regenerate.")


def ensure(n_images: int = 8091, size: int = 128, seed: int = 0, style: str = "photo", workers: int = 2) -> Path:
    """The cached folder ``runs/data/world8k_<style>_<size>px_n<n>_s<seed>``, generated if missing."""
    folder = data_dir() / f"world8k_{style}_{size}px_n{n_images}_s{seed}"
    if not folder.exists():
        try:
            generate(folder, n_images, size, seed, style, workers)
        except OSError:  # another process finished the same folder first
            if not folder.exists():
                raise
    validate(folder, n_images)
    return folder
