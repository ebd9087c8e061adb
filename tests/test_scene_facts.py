"""Caption facts: parse reads back exactly what the world's captions state; scores on hand counts."""
import json

import numpy as np
import pytest

from mmlib.data import world
from mmlib.eval.scene_facts import parse, score, statable, template_caption, world_scenes

N_SCENES = 3000


@pytest.fixture(scope="module")
def sampled():
    """(scene attributes, caption, stated) for the five captions of each of N_SCENES scenes."""
    out = []
    for seed in range(N_SCENES):
        rng = np.random.default_rng(seed)
        scene = world.sample_scene(rng)
        attrs = world.scene_attributes(scene)
        out += [(attrs, c, stated) for c, stated in world.describe(scene, rng)]
    return out


def test_world_captions_round_trip(sampled):
    bad = [(c, stated, parse(c)) for _, c, stated in sampled if parse(c) != stated]
    assert len(sampled) == 5 * N_SCENES
    assert not bad, f"{len(bad)} of {len(sampled)} differ; first: " + "\n".join(map(str, bad[:5]))


def test_world_captions_are_true_and_cover_every_statable_fact(sampled):
    s = score([c for _, c, _ in sampled], [a for a, _, _ in sampled])
    assert s.false.sum() == 0 and s.micro()[0] == 1.0
    said = {kv for _, _, stated in sampled for kv in stated.items()}
    can = {kv for a, _, _ in sampled for kv in statable(a).items()}
    assert said == can      # nothing statable is never said, nothing said is unstatable


def test_template_caption_states_every_statable_fact():
    for seed in range(500):
        attrs = world.scene_attributes(world.sample_scene(np.random.default_rng(seed)))
        caption = template_caption(attrs)
        assert parse(caption) == statable(attrs), caption
    assert statable({"ball": False, "object": "none", "second_subject": "none", "count": 1}) == {"count": 1}


DOG = {"category": "dog", "subject": "dog", "count": 1}
MAN = {"category": "person", "subject": "man", "count": 1}
CASES = [
    ("A dog is running on the grass .", {**DOG, "action": "running", "background": "park"}),
    # second subject: "and", "while ... watches / looks on", "<other> watches <main>", "near/with"
    ("A man and a black dog on the beach .",
     {**MAN, "background": "beach", "second_subject": "dog", "second_dog_colour": "black"}),
    ("A girl in a pink dress is jumping in the park while a woman in blue watches .",
     {"category": "person", "subject": "girl", "count": 1, "clothing_colour": "pink", "garment": "dress",
      "action": "jumping", "background": "park", "second_subject": "woman", "second_clothing_colour": "blue"}),
    ("A man runs on the sand while a brown dog looks on",
     {**MAN, "action": "running", "background": "beach", "second_subject": "dog", "second_dog_colour": "brown"}),
    ("A man in red watches a white dog catching a tennis ball in the snow .",
     {**DOG, "dog_colour": "white", "action": "catching", "ball": True, "ball_colour": "yellow",
      "background": "snow", "second_subject": "man", "second_clothing_colour": "red"}),
    ("A man walking with a dog by the lake .",
     {**MAN, "action": "walking", "background": "lake", "second_subject": "dog"}),
    ("A dog sits next to a person in yellow .", {**DOG, "action": "sitting", "second_clothing_colour": "yellow"}),
    ("A dog runs near a person .", {**DOG, "action": "running"}),      # "a person" second: nothing
    ("A dog runs near a child", {**DOG, "action": "running"}),
    # "there is", place first, ", wearing ... ,", "and jeans", tints
    ("there is a little girl jumping up in a room", {"category": "person", "subject": "girl", "count": 1,
                                                     "action": "jumping", "background": "indoor"}),
    ("On the beach , a young man runs .", {**MAN, "action": "running", "background": "beach"}),
    ("A man , wearing a light blue jacket and jeans , walks along the shore .",
     {**MAN, "clothing_colour": "blue", "garment": "top", "action": "walking", "background": "beach"}),
    ("A man in a bright orange t-shirt and jeans sits down the street .",
     {**MAN, "clothing_colour": "orange", "garment": "top", "action": "sitting", "background": "street"}),
    ("A woman in a bright green shirt stands in a green field .",
     {"category": "person", "subject": "woman", "count": 1, "clothing_colour": "green", "garment": "top",
      "action": "standing", "background": "park"}),
    ("A woman in bright green stands in a bright room .",
     {"category": "person", "subject": "woman", "count": 1, "clothing_colour": "green", "action": "standing",
      "background": "indoor"}),
    # vague phrases and verbs state nothing; fillers neither
    ("A dog playing outside near the water .", DOG),
    ("A dog is having fun outside at night", {**DOG, "background": "night"}),
    ("A dog runs with its tongue out on a sunny day .", {**DOG, "action": "running"}),
    ("A boy jumping with his arms in the air in the sunshine", {"category": "person", "subject": "boy",
                                                               "count": 1, "action": "jumping"}),
    # places vs objects vs second subjects after "near"
    ("A man stands near a tree near a lake .", {**MAN, "action": "standing", "object": "tree", "background": "lake"}),
    ("A man stands near a park bench near a dog .",
     {**MAN, "action": "standing", "object": "bench", "second_subject": "dog"}),
    ("A dog runs next to a toy in the yard", {**DOG, "action": "running", "object": "frisbee", "background": "park"}),
    # jumping vs catching; ball phrases
    ("A dog jumps .", {**DOG, "action": "jumping"}),
    ("A dog jumping in the air .", {**DOG, "action": "jumping"}),
    ("A dog jumps to catch a ball .", {**DOG, "action": "catching", "ball": True}),
    ("A dog leaping for a red ball .", {**DOG, "action": "catching", "ball": True, "ball_colour": "red"}),
    ("A boy is standing with a green ball", {"category": "person", "subject": "boy", "count": 1,
                                             "action": "standing", "ball": True, "ball_colour": "green"}),
    # hair vs clothing colours; blond; groups
    ("A red-haired girl in red .", {"category": "person", "subject": "girl", "count": 1, "hair_colour": "red",
                                    "clothing_colour": "red"}),
    ("A man with dark hair in dark blue .", {**MAN, "hair_colour": "black", "clothing_colour": "blue"}),
    ("Two blonde women in bright yellow sundresses sit on the sand .",
     {"category": "person", "subject": "woman", "count": 2, "hair_colour": "blond", "clothing_colour": "yellow",
      "garment": "dress", "action": "sitting", "background": "beach"}),
    ("Two men in red shirts run .", {"category": "person", "subject": "man", "count": 2,
                                     "clothing_colour": "red", "garment": "top", "action": "running"}),
    ("three people are walking", {"category": "person", "count": 3, "action": "walking"}),
    ("A kid is running", {"category": "person", "count": 1, "action": "running"}),
    ("An animal runs", {"category": "dog", "count": 1, "action": "running"}),
    ("A big brown animal sits .", {"category": "dog", "count": 1, "dog_colour": "brown", "action": "sitting"}),
    ("The dog sits down", {**DOG, "action": "sitting"}),
    ("A DOG RUNS ON THE BEACH", {**DOG, "action": "running", "background": "beach"}),
    ("a dog dog is running running", {**DOG, "action": "running"}),     # repetition: one dog
]


@pytest.mark.parametrize("caption,expected", CASES)
def test_parse_cases(caption, expected):
    assert parse(caption) == expected


def test_conflicting_statements_keep_the_first():
    assert parse("A dog runs on the beach in the snow")["background"] == "beach"
    assert parse("A dog runs and sits")["action"] == "running"
    assert parse("A dog catches a tennis ball and a red ball")["ball_colour"] == "yellow"
    man = parse("A man in red in a blue shirt")   # per attribute: the garment is said only later
    assert (man["clothing_colour"], man["garment"]) == ("red", "top")
    assert parse("A pink ball and a blue ball")["ball_colour"] == "blue"   # pink is not a ball colour


def test_parse_never_raises():
    words = sorted({w for c, _ in CASES for w in c.lower().split()} | {"watches", "in", "a", ",", "."})
    rng = np.random.default_rng(0)
    garbage = ["", " ", ".", "a", "a a a a", "the the", "watches", "in", "in a", "wearing a", "two",
               "ball", "red", "a man in", "A man in a red", "<unk> <unk>", "🙂 ünïcödé -- ' ,", "a dog " * 60]
    garbage += [" ".join(rng.choice(words, size=int(rng.integers(1, 25)))) for _ in range(500)]
    for text in garbage:
        facts = parse(text)
        assert all(v in world.ATTRIBUTES[k] for k, v in facts.items()), (text, facts)
    assert parse("") == {} and parse("<unk> <unk>") == {}


PERSON_SCENE = {"background": "park", "category": "person", "subject": "man", "count": 1,
                "clothing_colour": "red", "garment": "top", "hair_colour": "black", "action": "running",
                "ball": False, "object": "none", "second_subject": "none"}          # 8 statable
DOG_SCENE = {"background": "beach", "category": "dog", "subject": "dog", "count": 1, "dog_colour": "brown",
             "action": "catching", "ball": True, "ball_colour": "red", "object": "none",
             "second_subject": "woman", "second_clothing_colour": "blue"}         # 10 statable
CAPTIONS = ["A man in a red shirt is running with a blue ball on the beach .",  # 6 true, 3 false
            "A brown dog catches a ball ."]                                    # 6 true


def test_score_by_hand():
    s = score(CAPTIONS, [PERSON_SCENE, DOG_SCENE])
    assert s.true.sum() == 12 and s.false.sum() == 3 and s.statable.sum() == 18
    p, r, f1 = s.micro()
    assert (p, r) == pytest.approx((12 / 15, 12 / 18))
    assert f1 == pytest.approx(2 * p * r / (p + r))
    assert s.false_share == 0.5
    rows = {row["attribute"]: row for row in s.rows()}
    assert rows["ball"] == {"attribute": "ball", "n_stated": 2, "n_statable": 1, "precision": 0.5,
                            "recall": 1.0, "f1": pytest.approx(2 / 3)}
    assert (rows["ball_colour"]["precision"], rows["ball_colour"]["recall"]) == (0.0, 0.0)  # a colour of no ball
    assert (rows["background"]["n_stated"], rows["background"]["precision"]) == (1, 0.0)
    assert rows["hair_colour"]["precision"] is None and rows["hair_colour"]["recall"] == 0.0
    assert rows["second_dog_colour"] == {"attribute": "second_dog_colour", "n_stated": 0, "n_statable": 0,
                                         "precision": None, "recall": None, "f1": None}
    assert rows["all"]["false_share"] == 0.5 and rows["all"]["precision"] == pytest.approx(0.8)
    json.dumps(s.as_dict(), allow_nan=False)
    # stating a second subject of the wrong kind, or of a scene without one, is false
    assert score(["A dog catches a ball near a dog"], [DOG_SCENE]).false.sum() == 1
    assert score(["A man runs near a dog"], [PERSON_SCENE]).false.sum() == 1


def test_intervals_resample_images():
    s = score(CAPTIONS * 20, [PERSON_SCENE, DOG_SCENE] * 20)
    iv = s.intervals(n_boot=200, seed=0)
    for name, value in zip(("precision", "recall", "f1"), s.micro()):
        assert iv[name].value == pytest.approx(value)
        assert iv[name].lo < value < iv[name].hi
    assert iv["false_share"].value == 0.5 and iv["false_share"].lo < 0.5 < iv["false_share"].hi
    assert s.intervals(n_boot=200, seed=0) == iv
    assert json.loads(json.dumps(s.as_dict(n_boot=200)))["intervals"]["precision"] == iv["precision"].as_dict()


def test_world_scenes_reads_attributes_in_order(tmp_path):
    records = [{"image": f"w{i}.jpg", "attributes": a, "captions": []}
               for i, a in enumerate([PERSON_SCENE, DOG_SCENE])]
    (tmp_path / "scenes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert world_scenes(tmp_path, ["w1.jpg", "w0.jpg"]) == [DOG_SCENE, PERSON_SCENE]


def test_several_captions_per_image_are_resampled_by_image():
    """The human row: five captions of one image are one bootstrap unit (n = images, not captions)."""
    scenes = [PERSON_SCENE, DOG_SCENE] * 20
    caps = [c for c in CAPTIONS for _ in range(5)] * 20          # 5 captions per image, consecutive
    s = score(caps, [sc for sc in scenes for _ in range(5)])
    by_image, by_caption = s.intervals(n_boot=200, per_image=5), s.intervals(n_boot=200)
    assert by_image["f1"].n == 40 and by_caption["f1"].n == 200
    for name in ("precision", "recall", "f1", "false_share"):
        assert by_image[name].value == pytest.approx(by_caption[name].value)
        # identical captions per image: resampling captions understates the spread
        assert by_image[name].hi - by_image[name].lo > by_caption[name].hi - by_caption[name].lo
    with pytest.raises(ValueError, match="not 5 per image"):
        score(caps[:-1], [sc for sc in scenes for _ in range(5)][:-1]).intervals(n_boot=10, per_image=5)
