"""Flickr8k loader: caption formats, documented repairs, errors naming file:line, the study's split,
and image-folder validation (missing, truncated, non-image files)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmlib.data import flickr8k as f8k
from mmlib.data.flickr8k import CaptionFileError, ImageFolderError
from mmlib.paths import SEED_DIR

HEADER = "image,caption\n"


def five(image: str, stem: str = "A dog runs") -> str:
    """Five Kaggle-format caption lines for one image."""
    return "".join(f"{image},{stem} {k} .\n" for k in range(5))


def write(tmp_path, text: str | bytes, name: str = "captions.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return p


# ----------------------------------------------------------------------------- caption files
def test_kaggle_csv_with_quoted_commas(tmp_path):
    text = (HEADER + five("a.jpg") + 'b.jpg,"A dog , a ball ."\n'
            + 'b.jpg,"A sign says "" hi "" ."\n' + "b.jpg,x\n" * 3)
    caps = f8k.read_captions(write(tmp_path, text))
    assert list(caps) == ["a.jpg", "b.jpg"]
    assert caps["a.jpg"][0] == "A dog runs 0 ."
    assert caps["b.jpg"][:2] == ["A dog , a ball .", 'A sign says " hi " .']


def test_bom_and_crlf_are_repaired(tmp_path):
    clean = HEADER + five("a.jpg") + 'b.jpg,"one , two"\n' * 5
    dirty = b"\xef\xbb\xbf" + clean.replace("\n", "\r\n").encode()
    assert f8k.read_captions(write(tmp_path, dirty)) == f8k.read_captions(
        write(tmp_path, clean, "clean.txt"))


def test_header_is_optional_and_blank_lines_skipped(tmp_path):
    caps = f8k.read_captions(write(tmp_path, five("a.jpg") + "\n   \n" + five("b.png")))
    assert [len(c) for c in caps.values()] == [5, 5]


def test_quoted_field_over_two_lines_is_joined(tmp_path):
    text = HEADER + 'a.jpg,"A dog\nruns ."\n' + "a.jpg,x\n" * 4
    assert f8k.read_captions(write(tmp_path, text))["a.jpg"][0] == "A dog runs ."


@pytest.mark.parametrize("continuation", ["across the field .", "across the field , fast ."])
def test_caption_split_over_two_lines_names_the_line(tmp_path, continuation):
    text = HEADER + "a.jpg,A dog runs\n" + continuation + "\n" + "a.jpg,x\n" * 4
    with pytest.raises(CaptionFileError, match=r"captions\.txt:3: .*image file name"):
        f8k.read_captions(write(tmp_path, text))


def test_line_without_comma(tmp_path):
    with pytest.raises(CaptionFileError, match=r"captions\.txt:7: no comma"):
        f8k.read_captions(write(tmp_path, HEADER + five("a.jpg") + "b.jpg\n"))


def test_unquoted_comma_is_an_error(tmp_path):
    with pytest.raises(CaptionFileError, match=r":2: 3 fields; .*quoted"):
        f8k.read_captions(write(tmp_path, HEADER + "a.jpg,A dog , a ball .\n"))


@pytest.mark.parametrize("caption", ["", "   ", '""'])
def test_empty_caption_names_the_line(tmp_path, caption):
    text = HEADER + "a.jpg,x\n" * 2 + f"a.jpg,{caption}\n" + "a.jpg,x\n" * 2
    with pytest.raises(CaptionFileError, match=r"captions\.txt:4: empty caption"):
        f8k.read_captions(write(tmp_path, text))


def test_four_captions_names_image_and_its_last_line(tmp_path):
    text = HEADER + five("a.jpg") + "b.jpg,x\n" * 4 + five("c.jpg")
    with pytest.raises(CaptionFileError, match=r":10: image b\.jpg has 4 captions, expected 5"):
        f8k.read_captions(write(tmp_path, text))
    assert len(f8k.read_captions(write(tmp_path, text), expect_per_image=None)["b.jpg"]) == 4


def test_unclosed_quote_and_bad_utf8(tmp_path):
    with pytest.raises(CaptionFileError, match=r":2: malformed CSV"):
        f8k.read_captions(write(tmp_path, HEADER + 'a.jpg,"A dog\n'))
    with pytest.raises(CaptionFileError, match=r":3: not valid UTF-8"):
        f8k.read_captions(write(tmp_path, HEADER.encode() + b"a.jpg,x\na.jpg,\xff\n"))


def test_token_file_format(tmp_path):
    lines = [f"a.jpg#{k}\tA dog {k} ." for k in range(5)] + [f"b.jpg#{k}\tB {k}" for k in range(5)]
    caps = f8k.read_captions(write(tmp_path, "\r\n".join(lines) + "\r\n", "Flickr8k.token.txt"))
    assert caps == {"a.jpg": [f"A dog {k} ." for k in range(5)], "b.jpg": [f"B {k}" for k in range(5)]}


def test_token_file_errors_and_known_artefact(tmp_path):
    good = "".join(f"a.jpg#{k}\tA dog {k} .\n" for k in range(5))
    with pytest.raises(CaptionFileError, match=r"token\.txt:6: expected '<image>#<k><TAB>"):
        f8k.read_captions(write(tmp_path, good + "runs away .\n", "Flickr8k.token.txt"))
    with pytest.raises(CaptionFileError, match=r":6: duplicate caption number a\.jpg#4"):
        f8k.read_captions(write(tmp_path, good + "a.jpg#4\tagain\n", "Flickr8k.token.txt"))
    artefact = "".join(f"2258277193_586949ec62.jpg.1#{k}\tX\n" for k in range(5))
    with pytest.warns(UserWarning, match=r"left out 5 captions .*lines 6-10"):
        caps = f8k.read_captions(write(tmp_path, good + artefact, "Flickr8k.token.txt"))
    assert list(caps) == ["a.jpg"]
    with pytest.raises(CaptionFileError, match=r":6: 'x\.jpg\.1' is not an image file name"):
        f8k.read_captions(write(tmp_path, good + "x.jpg.1#0\tX\n", "Flickr8k.token.txt"),
                          expect_per_image=None)


# ----------------------------------------------------------------------------- the study's split
def test_split_rule():
    assert f8k.n_train(8091) == 6472 and f8k.n_train(15) == 12 and f8k.n_train(10) == 8
    caps = {f"{i}.jpg": [f"c{i}"] for i in (3, 1, 20, 9, 10)}  # string order: 1,10,20,3,9
    train, val = f8k.seed_split(caps)
    assert [im for im, _ in train] == ["1.jpg", "10.jpg", "20.jpg", "3.jpg"]
    assert val == [("9.jpg", ["c9"])]


def test_seed_split_reproduces_the_study_csvs_byte_exactly(tmp_path):
    src = SEED_DIR / "flickr8k_captions.txt"
    if not src.exists():
        pytest.skip(f"../shared/seed not found: {src}")
    caps = f8k.read_captions(src)
    assert len(caps) == 8091 and sum(map(len, caps.values())) == 40455
    train, val = f8k.seed_split(caps)
    assert (len(train), len(val)) == (6472, 1619)
    for written in f8k.write_seed_split_csvs(caps, tmp_path):
        assert written.read_bytes() == (SEED_DIR / written.name).read_bytes(), written.name


# ----------------------------------------------------------------------------- image folders
def make_folder(root, names=("a.jpg", "b.jpg", "c.png"), layout="kaggle"):
    """A tiny Flickr8k folder with noise images (JPEG/PNG by extension)."""
    cap_name, img_dir = (("captions.txt", "Images") if layout == "kaggle"
                         else ("Flickr8k.token.txt", "Flicker8k_Dataset"))
    (root / img_dir).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / img_dir / name)
    if layout == "kaggle":
        text = HEADER + "".join(five(n) for n in names)
    else:
        text = "".join(f"{n}#{k}\tcap {k}\n" for n in names for k in range(5))
    (root / cap_name).write_text(text)
    return root / img_dir


@pytest.mark.parametrize("layout", ["kaggle", "original"])
def test_load_folder_valid(tmp_path, layout):
    make_folder(tmp_path, layout=layout)
    for check in f8k.CHECKS:
        caps = f8k.load_folder(tmp_path, check_images=check, expect_images=3)
        assert list(caps) == ["a.jpg", "b.jpg", "c.png"]


def test_missing_and_extra_images(tmp_path):
    images = make_folder(tmp_path)
    (images / "b.jpg").rename(images / "z.jpg")
    with pytest.raises(ImageFolderError, match=r"Images/b\.jpg: missing"):
        f8k.load_folder(tmp_path)
    (images / "z.jpg").rename(images / "b.jpg")
    (images / "extra.jpg").write_bytes((images / "a.jpg").read_bytes())
    with pytest.raises(ImageFolderError, match=r"extra\.jpg: no captions"):
        f8k.load_folder(tmp_path)
    assert len(f8k.load_folder(tmp_path, allow_extra_images=True)) == 3


@pytest.mark.parametrize("name", ["b.jpg", "c.png"])
def test_truncated_image(tmp_path, name):
    images = make_folder(tmp_path)
    data = (images / name).read_bytes()
    (images / name).write_bytes(data[: len(data) * 2 // 3])
    for check in ("trailer", "full"):
        with pytest.raises(ImageFolderError, match=rf"Images/{name}: (truncated|unreadable)"):
            f8k.load_folder(tmp_path, check_images=check)
    if name.endswith(".jpg"):  # documented blind spot of the header-only check
        f8k.load_folder(tmp_path, check_images="header")


def test_non_image_file(tmp_path):
    images = make_folder(tmp_path)
    (images / "a.jpg").write_text("not an image")
    with pytest.raises(ImageFolderError, match=r"Images/a\.jpg: not an image"):
        f8k.load_folder(tmp_path, check_images="header")


def test_no_layout_and_bad_check(tmp_path):
    with pytest.raises(ImageFolderError, match="no Flickr8k layout"):
        f8k.load_folder(tmp_path)
    make_folder(tmp_path)
    with pytest.raises(ValueError, match="check_images"):
        f8k.load_folder(tmp_path, check_images="thorough")
