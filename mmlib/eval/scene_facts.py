"""Caption facts against the true scene: an exact, CHAIR-like score (Rohrbach et al. 2018,
https://arxiv.org/abs/1809.02156) for world8k, where the scene behind every image is known.

:func:`parse` reads any caption into the canonical attributes (``world.ATTRIBUTES``) it states,
using the world's own phrase tables; on every caption the world's grammar writes it returns
exactly the ``stated`` dict that :func:`world.describe` records. :func:`score` then counts, per
caption, the stated facts that are true or false of the scene and the scene's statable facts
the caption gets right (precision, recall, F1, share of captions with a false statement), keeping
per-image counts so that :meth:`FactScores.intervals` can bootstrap them by resampling images.

    scenes = world_scenes(folder, images)       # attribute dicts from scenes.jsonl
    s = score(generated_captions, scenes)
    s.rows(); s.intervals()["precision"]        # 1 - precision = hallucination rate

Reading rules (all of the grammar's ambiguities resolve by them):

- the caption is cut into the world's phrases, leaving the fewest words unknown, then in the
  fewest (longest) phrases: "jumping to catch" is catching, "jumping in the air" jumping, "near
  the water" a vague place, "in a green field" a place and not clothing, "a tennis ball" a
  yellow ball, "red-haired" hair and "red" a colour, "sits down the street" sitting on a street;
- a colour right before a ball or dog noun is that ball's or dog's colour; after "in", "wearing"
  or "dressed in" (optionally "a", then an optional garment) it is the clothing of the last
  subject; "with ... hair" belongs to the last subject, other hair words to the next noun;
- each noun with a determiner starts a subject (a noun repeated right after a noun does not):
  the first is the main one and the second the other, unless "watches" stands between them
  ("a woman watches a dog running": the dog is the main subject); later subjects are ignored.
  "person", "child", "kid", "animal" ... state the category (and the count) but not the kind;
- only canonical values are stated ("a pink ball" states the ball, not a colour); when a
  caption states two values for one attribute the **first** is kept ("on the beach in the
  snow" states beach): the reading from the start of the sentence, and a stable one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import world
from ..data.world import ATTRIBUTES
from .bootstrap import N_BOOT, Interval, interval, mean_interval, ratio_interval
from .captions import tokenize

NAMES = list(ATTRIBUTES)
# scene values no caption of the grammar can state: absence is never said
UNSTATABLE = {"ball": False, "object": "none", "second_subject": "none"}
_MAIN = ("category", "subject", "count", "clothing_colour", "garment", "hair_colour", "dog_colour")
_SECOND = {"subject": "second_subject", "clothing_colour": "second_clothing_colour",
           "dog_colour": "second_dog_colour"}


@lru_cache(maxsize=1)
def _lexicon() -> dict[tuple[str, ...], tuple[str, object]]:
    """word tuple -> (kind, value), built from the world's phrase tables; raises on a phrase with
    two meanings, so an edit of the tables that makes the grammar ambiguous fails loudly here."""
    lex: dict[tuple[str, ...], tuple[str, object]] = {}

    def add(phrase: str, kind: str, value=None):
        key = tuple(phrase.split())
        if lex.setdefault(key, (kind, value)) != (kind, value):
            raise ValueError(f"{phrase!r} means both {lex[key]} and {(kind, value)}")

    for word, n in {"an": 1, "the": 1, "one": 1, **{w: n for n, w in world.NUMBERS.items()}}.items():
        add(word, "det", n)
    for kind, entries in world.NOUNS.items():
        category = "dog" if kind == "dog" else "person"
        for adj, noun, plural, specific, _ in entries:
            add(noun, "noun", (kind if specific else None, category, False))
            add(plural, "noun", (kind if specific else None, category, True))
            if adj:
                add(adj, "adj")
    for colour, text in world.HAIR_WORDS.items():
        for p in text.split("|"):
            add(p, "hair", (colour, p.startswith("with ")))   # "with ... hair" follows its noun
    for c in {*ATTRIBUTES["clothing_colour"], *ATTRIBUTES["dog_colour"], *ATTRIBUTES["ball_colour"]}:
        add(c, "colour", c)
    for c, tints in world.TINTS.items():
        for t in tints.split("|"):
            add(f"{t} {c}", "colour", c)
    for garment, words in world.GARMENTS.items():
        for w, _ in words:
            add(w, "garment", garment)
            add(_plural(w), "garment", garment)
    for p in ("in", "wearing", "dressed in"):
        add(p, "wear")
    add("ball", "ball")
    add("balls", "ball")
    add("tennis ball", "ball", "yellow")
    for action, text in [*world.VERBS.items(), (None, world.VAGUE_VERBS)]:
        for phrase in text.split("|"):
            for form in phrase.split("/"):
                add(form.replace("{b}", "").strip(), "verb", action)   # the ball is parsed apart
    for p in ("watches", "watch", "watching", "looks on", "look on"):
        add(p, "watch")
    for background, text in world.PLACES.items():
        for p in text.split("|"):
            add(p.lstrip("?"), "place", None if p.startswith("?") else background)
    for obj, text in world.OBJECT_WORDS.items():
        for p in text.split("|"):
            add(p, "object", obj)
    for text in [*world.FILLERS.values(), "together"]:
        for p in text.split("|"):
            for pos in ("his", "her"):
                add(p.format(pos=pos), "filler")
    return lex


def _lexemes(caption: str) -> list[tuple[str, object]]:
    """The segmentation into phrases that leaves the fewest words unknown, then has the fewest
    (longest) phrases; an unknown word is ("other", word). Plain longest match would read "sits
    down the street" as "sits down" + "the street" and lose the place ("sits" + "down the street")."""
    lex = _lexicon()
    longest = max(map(len, lex))
    words = tokenize(caption).split()
    # best[i] = ((unknown words, phrases), first phrase length) for words[i:]
    best: list[tuple[tuple[int, int], int]] = [((0, 0), 0)] * (len(words) + 1)
    for i in range(len(words) - 1, -1, -1):
        (u, p), _ = best[i + 1]
        best[i] = ((u + 1, p + 1), 1)             # words[i] unknown
        for n in range(min(longest, len(words) - i), 0, -1):
            if tuple(words[i:i + n]) in lex:
                (u, p), _ = best[i + n]
                if (u, p + 1) < best[i][0]:
                    best[i] = ((u, p + 1), n)
    out, i = [], 0
    while i < len(words):
        n = best[i][1]
        out.append(lex.get(tuple(words[i:i + n]), ("other", words[i])))
        i += n
    return out


def _put(d: dict, key: str, value) -> None:
    """State ``key = value`` unless already stated (the first value wins) or not canonical."""
    if value in ATTRIBUTES[key]:
        d.setdefault(key, value)


def parse(caption: str) -> dict:
    """The canonical attributes (keys and values as in ``world.ATTRIBUTES``) ``caption`` states.

    Never raises; words it does not know state nothing. See the module docstring for the rules."""
    lex = _lexemes(caption)
    facts: dict = {}                      # of the scene: background, action, ball, object
    subjects: list[tuple[int, dict]] = []  # (lexeme index of the noun, what is said of it)
    watch: list[int] = []
    pending: list[tuple[str, object]] = []  # determiner and modifiers waiting for their noun
    i = 0
    while i < len(lex):
        kind, value = lex[i]
        colour = next((v for k, v in reversed(pending) if k == "colour"), None)
        if kind in ("det", "adj", "colour") or kind == "hair" and not value[1]:
            pending.append((kind, value))
            i += 1
            continue
        if kind == "noun":
            who, category, plural = value
            det = next((v for k, v in pending if k == "det"), None)
            if det or not subjects or subjects[-1][0] != i - 1:   # "a dog dog": one dog
                s: dict = {"category": category}
                _put(s, "count", det if det and det > 1 else None if plural else 1)
                _put(s, "subject", who)
                if category == "dog":     # a colour before a person noun is not clothing: unsaid
                    _put(s, "dog_colour", colour)
                _put(s, "hair_colour", next((v[0] for k, v in pending if k == "hair"), None))
                subjects.append((i, s))
        elif kind == "hair" and subjects:
            _put(subjects[-1][1], "hair_colour", value[0])
        elif kind == "wear":              # wear [a] [colour] [garment]
            j = i + 1
            if j + 1 < len(lex) and lex[j][0] == "det" and lex[j + 1][0] in ("colour", "garment"):
                j += 1
            said = {}
            for part in ("colour", "garment"):
                if j < len(lex) and lex[j][0] == part:
                    said[part] = lex[j][1]
                    j += 1
            if said and subjects:
                _put(subjects[-1][1], "clothing_colour", said.get("colour"))
                _put(subjects[-1][1], "garment", said.get("garment"))
            i = j - 1 if said else i
        elif kind == "ball":
            _put(facts, "ball", True)
            _put(facts, "ball_colour", value or colour)
        elif kind in ("verb", "place", "object"):
            _put(facts, {"verb": "action", "place": "background", "object": "object"}[kind], value)
        elif kind == "watch":
            watch.append(i)
        pending = []
        i += 1

    out = dict(facts)
    if len(subjects) > 1 and any(subjects[0][0] < w < subjects[1][0] for w in watch):
        subjects[:2] = subjects[1::-1]    # "<other> watches <main> <verb>"
    if subjects:
        out.update((k, v) for k, v in subjects[0][1].items() if k in _MAIN)
    if len(subjects) > 1:
        out.update((_SECOND[k], v) for k, v in subjects[1][1].items() if k in _SECOND)
    return {k: out[k] for k in NAMES if k in out}


def statable(attrs: dict) -> dict:
    """The scene's facts a caption could state: all of ``scene_attributes`` but the absences
    (no ball, no object, no second subject), which the grammar never says. Every other key and
    value is stated by some world caption (tested)."""
    return {k: v for k, v in attrs.items() if k not in UNSTATABLE or v != UNSTATABLE[k]}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(garment: str) -> str:
    return garment + ("es" if garment.endswith("dress") else "s")   # as world.captions._subject writes it


def template_caption(attrs: dict) -> str:
    """A fixed-template caption in the world's phrasing that states every statable fact of a
    scene, e.g. "A dark-haired man in a red shirt is running with a blue ball near a tree near a
    brown dog on the grass ." (the first stating phrase of each table)."""
    def first(text: str) -> str:
        return next(p for p in text.split("|") if not p.startswith(("?", "with ")))

    a = statable(attrs)
    n, (_, noun, plural, _, _) = a["count"], world.NOUNS[a["subject"]][0]
    pre = a.get("dog_colour") or (first(world.HAIR_WORDS[a["hair_colour"]]) if "hair_colour" in a else "")
    head = " ".join(filter(None, [pre, plural if n > 1 else noun]))
    parts = [f"{_article(head) if n == 1 else world.NUMBERS[n]} {head}"]
    if "clothing_colour" in a:
        c, g = a["clothing_colour"], world.GARMENTS[a["garment"]][0][0]
        parts.append(f"in {c} {_plural(g)}" if n > 1 else f"in {_article(c)} {c} {g}")
    ball = f"a {a['ball_colour']} ball" if a.get("ball") else ""
    verb = first(world.VERBS[a["action"]]).split("/")[0]
    parts.append(("are " if n > 1 else "is ") + verb.format(b=ball))
    if ball and "{b}" not in verb:
        parts.append(f"with {ball}")
    if "object" in a:
        parts.append(f"near a {first(world.OBJECT_WORDS[a['object']])}")
    if "second_subject" in a:
        other = " ".join(filter(None, [a.get("second_dog_colour"), a["second_subject"]]))
        parts.append(f"near {_article(other)} {other}")
        if "second_clothing_colour" in a:
            parts.append(f"in {a['second_clothing_colour']}")
    text = " ".join(parts + [first(world.PLACES[a["background"]]), "."])
    return text[0].upper() + text[1:]


@dataclass
class FactScores:
    """Per-image counts, (n_images, n_attributes) in ``names`` order: stated facts that are true,
    stated facts that are false, and the scene's statable facts. A true statement is always a
    statable fact (parse never states an absence), so ``true`` also counts the recall hits."""
    names: list[str]
    true: np.ndarray
    false: np.ndarray
    statable: np.ndarray

    @staticmethod
    def _prf(t, f, s) -> tuple[float, float, float]:
        nan = float("nan")
        p = t / (t + f) if t + f else nan
        r = t / s if s else nan
        return float(p), float(r), float(2 * t / (t + f + s)) if t + f + s else nan  # F1 = 2PR/(P+R)

    @property
    def false_share(self) -> float:
        """Share of captions with at least one false statement."""
        return float((self.false.sum(1) > 0).mean()) if len(self.false) else float("nan")

    def micro(self) -> tuple[float, float, float]:
        """Precision, recall, F1 pooled over all attributes and images."""
        return self._prf(self.true.sum(), self.false.sum(), self.statable.sum())

    def intervals(self, n_boot: int = N_BOOT, seed: int = 0, per_image: int = 1) -> dict[str, Interval]:
        """Bootstrap intervals (resampling images) of micro precision, recall, F1 and false share.

        ``per_image`` > 1: the rows are ``per_image`` consecutive captions of each image (the five human
        references); their counts are summed per image so that images, not captions, are resampled."""
        t, f, s = (x.sum(1).astype(np.float64) for x in (self.true, self.false, self.statable))
        bad = (f > 0).astype(np.float64)
        if per_image > 1:
            if len(t) % per_image:
                raise ValueError(f"{len(t)} captions are not {per_image} per image")
            t, f, s, bad = (x.reshape(-1, per_image).sum(1) for x in (t, f, s, bad))
        return {"precision": ratio_interval(t, t + f, n_boot, seed),
                "recall": ratio_interval(t, s, n_boot, seed),
                "f1": interval(lambda w: self._prf(w @ t, w @ f, w @ s)[2], len(t), n_boot, seed),
                "false_share": (mean_interval(bad, n_boot, seed) if per_image == 1 else
                                ratio_interval(bad, np.full(len(bad), float(per_image)), n_boot, seed))}

    def rows(self) -> list[dict]:
        """One row per attribute, then the micro row ``"all"`` (with the false share); undefined
        ratios (nothing stated, nothing statable) are None, so the rows are JSON-serialisable."""
        def row(name, t, f, s, **extra):
            ratios = dict(zip(("precision", "recall", "f1"), self._prf(t, f, s)), **extra)
            return {"attribute": name, "n_stated": int(t + f), "n_statable": int(s),
                    **{k: None if np.isnan(v) else v for k, v in ratios.items()}}
        T, F, S = self.true.sum(0), self.false.sum(0), self.statable.sum(0)
        return ([row(n, T[j], F[j], S[j]) for j, n in enumerate(self.names)]
                + [row("all", T.sum(), F.sum(), S.sum(), false_share=self.false_share)])

    def as_dict(self, n_boot: int = 0, seed: int = 0) -> dict:
        """The rows, and with ``n_boot`` > 0 the bootstrap intervals of the micro row, as JSON."""
        out: dict = {"n_images": len(self.true), "rows": self.rows()}
        if n_boot:
            out["intervals"] = {k: iv.as_dict() for k, iv in self.intervals(n_boot, seed).items()}
        return out


def score(captions: Sequence[str], scenes: Sequence[dict]) -> FactScores:
    """Score each caption against its scene's attributes (``scene_attributes`` / the "attributes"
    of a ``scenes.jsonl`` record): a stated fact is false when the scene has another value or
    lacks the attribute (``dog_colour`` of a person, a second subject that is not there)."""
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions for {len(scenes)} scenes")
    shape = (len(captions), len(NAMES))
    true, false, stat = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    for i, (caption, attrs) in enumerate(zip(captions, scenes)):
        facts = statable(attrs)
        for k, v in parse(caption).items():
            j = NAMES.index(k)
            ok = k in attrs and attrs[k] == v
            true[i, j], false[i, j] = ok, not ok
        stat[i] = [k in facts for k in NAMES]
    return FactScores(NAMES, true, false, stat)


def world_scenes(folder: str | Path, images: Sequence[str]) -> list[dict]:
    """Scene attribute dicts of ``images`` (names as in ``captions.txt``) from a world folder."""
    records = world.read_scenes(Path(folder))
    return [records[name]["attributes"] for name in images]
