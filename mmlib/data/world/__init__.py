"""world8k: a procedural, deterministic stand-in for Flickr8k (Hodosh et al. 2013).

Each image is a :class:`Scene` -- a background, a main group of one to three people or dogs
sharing their attributes, an optional second subject, ball and distractor object, and lighting --
rendered as a ``photo`` (texture, light gradient, shadows, blur, noise) or a ``cartoon`` (flat
saturated colours, black outlines). :func:`describe` writes five captions the way different
annotators would (synonyms, level of detail, word order) and records for each caption exactly
which canonical attributes (:data:`ATTRIBUTES`) it states, so a generated image can later be
checked against the caption that produced it. See ``../shared/WORLD.md`` for what the world is for.

Modules: ``scene`` (attributes, sampling, layout, pose geometry), ``render`` (photo / cartoon drawing),
``captions`` (annotator-like captions and what each states), ``dataset`` (Kaggle-layout folders).

Folder layout (the Kaggle Flickr8k one): ``Images/w0000123_<8 hex>.jpg``, ``captions.txt``
(``image,caption``, CSV-quoted where a caption holds a comma, 5 lines per image) and
``scenes.jsonl`` (per image: the scene, its full attributes and the 5 captions with what each states).
"""
from .scene import (  # noqa: F401 - the world's public names, as mmlib.data.world.<name>
    BACKGROUNDS, PEOPLE, KINDS, CLOTHING, DOG_COLOURS, HAIR, ACTIONS, BALL_COLOURS, OBJECTS, ATTRIBUTES,
    SKIN, Figure, Thing, Scene, scene_attributes, LAYOUT, DISTRACTORS, DOG_ACTIONS, PERSON_ACTIONS,
    sample_scene, PERSON_POSES, DOG_POSES, SEED_PROMPT_SCENES_ATTRS, scene_for_prompt,
    SEED_PROMPT_SCENES)
from .render import (  # noqa: F401 - the world's public names, as mmlib.data.world.<name>
    RGB, HAIR_RGB, DOG_RGB, BALL_RGB, OUTLINE, cartoon_rgb, render)
from .captions import (  # noqa: F401 - the world's public names, as mmlib.data.world.<name>
    NOUNS, VERBS, VAGUE_VERBS, PLACES, GARMENTS, TINTS, HAIR_WORDS, OBJECT_WORDS, NUMBERS, FILLERS,
    describe, STOP_WORDS, caption_stats)
from .dataset import (  # noqa: F401 - the world's public names, as mmlib.data.world.<name>
    image_name, example, generate, validate, ensure, read_scenes)
