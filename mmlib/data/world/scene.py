"""world8k scenes: the attribute vocabulary (:data:`ATTRIBUTES`), the :class:`Scene` record, how scenes are
sampled and laid out (with the figures' pose geometry), and the study's seed-prompt scenes."""
from __future__ import annotations

import hashlib
import json
import math
from bisect import bisect
from dataclasses import asdict, dataclass
from itertools import accumulate

import numpy as np


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

SKIN = ((240, 200, 170), (200, 150, 110), (140, 95, 65))


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

