"""world8k captions: five annotator-like captions per scene (synonyms, detail, word order), each with the
canonical attributes it states; the phrase tables, and caption statistics."""
from __future__ import annotations

import statistics
from collections import Counter

import numpy as np

from .scene import Figure, Scene, _choice


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


STOP_WORDS = frozenset("a an the in on is and with of are to at his her its their while through down up by "
                  "for into from as it there near next over front".split())


def caption_stats(captions: list[str], top: int = 20) -> dict:
    """Length and vocabulary statistics; words are whitespace tokens (so " ." counts, as usual for
    Flickr8k), types are lower-cased tokens stripped of punctuation."""
    lengths = [len(c.split()) for c in captions]
    counts = Counter(t for c in captions for w in c.lower().split() if (t := w.strip('.,!?"\'')))
    return {"n_captions": len(captions), "mean_words": round(statistics.mean(lengths), 2),
            "median_words": statistics.median(lengths), "min_words": min(lengths), "max_words": max(lengths),
            "vocab_size": len(counts), "types_ge5": sum(c >= 5 for c in counts.values()),
            "top_content_words": [w for w, _ in counts.most_common() if w not in STOP_WORDS][:top]}


