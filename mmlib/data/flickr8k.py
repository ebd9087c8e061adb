"""Real Flickr8k: caption files, the study's train/val split, and image-folder validation.

Flickr8k (Hodosh et al. 2013, https://doi.org/10.1613/jair.3994) comes in two layouts:

- Kaggle: ``captions.txt`` (CSV ``image,caption`` with a header; captions containing a comma are
  CSV-quoted, ``"`` doubled inside) and ``Images/``.
- original: ``Flickr8k.token.txt`` (``<image>#<k>\\t<caption>``) and ``Flicker8k_Dataset/``
  (sic; ``Flickr8k_Dataset/`` is accepted too).

Bad input raises :class:`CaptionFileError` naming ``file:line``, or is repaired as documented in
:func:`read_captions` -- nothing is dropped silently.
"""
from __future__ import annotations

import contextlib
import csv
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

Pairs = list[tuple[str, list[str]]]  # [(image file name, its captions)]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# a file name without directory parts, whitespace, commas or '#', ending in an image extension
_IMAGE_NAME = re.compile(r"[^\s,#/\\]+\.(?:jpe?g|png|bmp|gif|webp)", re.IGNORECASE)
_TOKEN_LINE = re.compile(r"(?P<image>[^\s#]+)#(?P<k>\d+)\t(?P<caption>.*)")
KAGGLE_HEADER = ["image", "caption"]
# The original Flickr8k.token.txt holds 5 captions for "2258277193_586949ec62.jpg.1", a name with
# no image file (a known artefact of the release; the Kaggle captions.txt leaves it out).
KNOWN_ARTEFACTS = frozenset({"2258277193_586949ec62.jpg.1"})


class CaptionFileError(ValueError):
    """A caption file that cannot be read as Flickr8k; the message names ``file:line``."""


class ImageFolderError(ValueError):
    """A Flickr8k folder whose images do not match its captions, or are unreadable/truncated."""


@dataclass
class _Caption:
    image: str
    text: str
    line: int  # 1-based line on which the caption's record ends


# ----------------------------------------------------------------------------- caption files
def read_captions(path: str | Path, *, expect_per_image: int | None = 5,
                  skip_images: Collection[str] = KNOWN_ARTEFACTS) -> dict[str, list[str]]:
    """Read a Flickr8k caption file into ``{image: [captions]}`` (insertion-ordered).

    The format is detected from the first non-blank line: ``<image>#<k><TAB>`` means
    ``Flickr8k.token.txt``; anything else is read as the Kaggle ``captions.txt`` CSV, with or
    without its ``image,caption`` header. Caption text is kept exactly (no strip, no lowercasing).

    Repairs (documented, tested):
      - a UTF-8 byte-order mark is stripped; CRLF (and lone CR) line ends become LF;
      - blank lines carry no data and are skipped;
      - in the CSV format a quoted field may span lines (legal CSV): its line breaks become spaces;
      - images named in ``skip_images`` (default: the token file's known artefact
        ``2258277193_586949ec62.jpg.1``) are left out with a ``UserWarning`` naming their lines.

    Errors (``CaptionFileError``, message ``<path>:<line>: ...``):
      - a line that does not start with an image file name (e.g. the second half of a caption
        split over two lines) -- unless it is inside a quoted CSV field;
      - a line without a comma (CSV) or without ``#k<TAB>`` (token file);
      - more than two CSV fields (a caption with an unquoted comma);
      - an empty caption;
      - an image with a caption count other than ``expect_per_image`` (``None`` skips the
        check): the message names the image and the line of its last caption;
      - invalid UTF-8.
    """
    path = Path(path)
    lines = _read_lines(path)
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise CaptionFileError(f"{path}:1: no captions (empty file)")
    parse = _parse_token_file if _TOKEN_LINE.fullmatch(first) else _parse_kaggle_csv
    records = _drop_skipped(parse(path, lines), skip_images, path)
    captions: dict[str, list[str]] = {}
    last_line: dict[str, int] = {}
    for rec in records:
        captions.setdefault(rec.image, []).append(rec.text)
        last_line[rec.image] = rec.line
    if expect_per_image is not None:
        _check_counts(path, captions, last_line, expect_per_image)
    return captions


def _read_lines(path: Path) -> list[str]:
    """The file's lines without line ends; BOM stripped, CRLF/CR normalised to LF."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # strips a leading BOM
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise CaptionFileError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line end
    return lines


def _is_image_name(s: str) -> bool:
    return _IMAGE_NAME.fullmatch(s) is not None


def _parse_kaggle_csv(path: Path, lines: list[str]) -> list[_Caption]:
    """Records of a Kaggle ``captions.txt``; ``csv`` handles quoting and multi-line fields."""
    reader = csv.reader((line + "\n" for line in lines), strict=True)
    records, start = [], 1
    try:
        for row in reader:
            end, where = reader.line_num, f"{path}:{start}"
            if start == 1 and row == KAGGLE_HEADER:
                pass
            elif row and not (len(row) == 1 and not row[0].strip()):  # skip blank lines
                records.append(_kaggle_record(row, where, end))
            start = end + 1
    except csv.Error as e:
        raise CaptionFileError(f"{path}:{start}: malformed CSV ({e})") from None
    return records


def _kaggle_record(row: list[str], where: str, line: int) -> _Caption:
    image = row[0]
    if not _is_image_name(image):
        raise CaptionFileError(
            f"{where}: line does not start with an image file name ({image[:40]!r}); a caption "
            f"split over two lines? (a caption may span lines only inside a quoted CSV field)")
    if len(row) == 1:
        raise CaptionFileError(f"{where}: no comma between image name and caption")
    if len(row) > 2:
        raise CaptionFileError(f"{where}: {len(row)} fields; a caption containing a comma must "
                               f"be quoted (\"...\")")
    return _Caption(image, _checked_text(row[1].replace("\n", " "), where), line)


def _parse_token_file(path: Path, lines: list[str]) -> list[_Caption]:
    """Records of the original ``Flickr8k.token.txt`` (``<image>#<k>\\t<caption>``)."""
    records, seen = [], set()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        m = _TOKEN_LINE.fullmatch(line)
        if m is None:
            raise CaptionFileError(f"{where}: expected '<image>#<k><TAB><caption>' (a caption "
                                   f"split over two lines?): {line[:60]!r}")
        key = (m["image"], m["k"])
        if key in seen:
            raise CaptionFileError(f"{where}: duplicate caption number {m['image']}#{m['k']}")
        seen.add(key)
        records.append(_Caption(m["image"], _checked_text(m["caption"], where), i))
    return records


def _checked_text(text: str, where: str) -> str:
    if not text.strip():
        raise CaptionFileError(f"{where}: empty caption")
    return text


def _drop_skipped(records: list[_Caption], skip: Collection[str], path: Path) -> list[_Caption]:
    """Leave out known-artefact images, with a warning naming them and their lines."""
    dropped = [r for r in records if r.image in skip]
    if dropped:
        names = sorted({r.image for r in dropped})
        warnings.warn(f"{path}: left out {len(dropped)} captions of {names} (lines "
                      f"{dropped[0].line}-{dropped[-1].line}): no such image in Flickr8k",
                      stacklevel=3)
    kept = [r for r in records if r.image not in skip]
    for r in kept:
        if not _is_image_name(r.image):
            raise CaptionFileError(f"{path}:{r.line}: {r.image!r} is not an image file name")
    return kept


def _check_counts(path: Path, captions: dict[str, list[str]], last_line: dict[str, int],
                  expected: int) -> None:
    for image, caps in captions.items():
        if len(caps) != expected:
            raise CaptionFileError(f"{path}:{last_line[image]}: image {image} has {len(caps)} "
                                   f"captions, expected {expected} (line {last_line[image]} is "
                                   f"its last caption)")


# ----------------------------------------------------------------------------- the study's split
def n_train(n_images: int) -> int:
    """Train size of the study's 8:2 split: ``floor(0.8 n)`` (6,472 of 8,091).

    Integer arithmetic: ``int(0.8 * n)`` and ``n - ceil(0.2 * n)`` (scikit-learn's
    ``train_test_split(test_size=0.2, shuffle=False)``) agree for n = 8,091 but not for every n
    in floating point (n = 15: 12 vs 11).
    """
    return 4 * n_images // 5


def seed_split(captions: dict[str, list[str]]) -> tuple[Pairs, Pairs]:
    """The study's split: images sorted by file name, first ``floor(0.8 n)`` train, rest val.

    Returns ``(train, val)`` lists of ``(image, captions)``; captions keep the file's order.
    """
    pairs = [(image, list(captions[image])) for image in sorted(captions)]
    k = n_train(len(pairs))
    return pairs[:k], pairs[k:]


def write_seed_split_csvs(captions: dict[str, list[str]], out_dir: str | Path) -> tuple[Path, Path]:
    """Write the study's ``train_captions.csv`` / ``val_captions.csv`` into ``out_dir``.

    Each holds the first caption of each image of its split, as pandas' ``to_csv(index=False)``
    writes it (header ``image,caption``, minimal quoting with ``""`` escapes, LF line ends) --
    byte-identical to the study's files for its captions.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pairs in zip(("train_captions.csv", "val_captions.csv"), seed_split(captions)):
        p = out_dir / name
        with p.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(KAGGLE_HEADER)
            w.writerows((image, caps[0]) for image, caps in pairs)
        paths.append(p)
    return paths[0], paths[1]


# ----------------------------------------------------------------------------- image folders
_LAYOUTS = (("captions.txt", ("Images",)),
            ("Flickr8k.token.txt", ("Flicker8k_Dataset", "Flickr8k_Dataset")))
CHECKS = ("exists", "header", "trailer", "full")


def find_layout(folder: str | Path) -> tuple[Path, Path]:
    """``(caption file, image directory)`` of a Kaggle or original-layout Flickr8k folder."""
    folder = Path(folder)
    for cap_name, dir_names in _LAYOUTS:
        for dir_name in dir_names:
            if (folder / cap_name).is_file() and (folder / dir_name).is_dir():
                return folder / cap_name, folder / dir_name
    raise ImageFolderError(f"{folder}: no Flickr8k layout found (expected captions.txt + Images/ "
                           f"or Flickr8k.token.txt + Flicker8k_Dataset/ or Flickr8k_Dataset/)")


def load_folder(folder: str | Path, *, expect_per_image: int | None = 5,
                expect_images: int | None = None, check_images: str = "trailer",
                allow_extra_images: bool = False) -> dict[str, list[str]]:
    """Read a Flickr8k folder's captions and validate its images; returns ``{image: captions}``.

    Every captioned image must exist; files in the image directory without captions are an error
    unless ``allow_extra_images``. ``check_images`` (cost for 8k images of ~100 KB on one core):

    - ``"exists"``: files exist (instant);
    - ``"header"``: PIL opens the file and ``verify()`` passes (< 10 s; PNG CRCs are checked but a
      truncated JPEG passes);
    - ``"trailer"`` (default): ``"header"`` plus the end-of-image marker -- JPEG ``FFD9`` / PNG
      ``IEND`` in the last 64 bytes (ignoring zero padding) -- catches truncated files at the
      cost of one extra small read; other formats get a full decode;
    - ``"full"``: decode every image (about a minute).

    Raises :class:`ImageFolderError` listing the offending files (up to 10), or
    :class:`CaptionFileError` for the caption file.
    """
    if check_images not in CHECKS:
        raise ValueError(f"check_images must be one of {CHECKS}, got {check_images!r}")
    cap_path, image_dir = find_layout(folder)
    captions = read_captions(cap_path, expect_per_image=expect_per_image)
    if expect_images is not None and len(captions) != expect_images:
        raise ImageFolderError(f"{cap_path}: captions for {len(captions)} images, expected "
                               f"{expect_images}")
    _check_image_set(captions, image_dir, allow_extra_images)
    if check_images != "exists":
        problems = [p for image in captions
                    if (p := image_problem(image_dir / image, check_images))]
        _raise_if(problems, f"{image_dir}: {len(problems)} unreadable or truncated images")
    return captions


def _check_image_set(captions: dict[str, list[str]], image_dir: Path, allow_extra: bool) -> None:
    present = {p.name for p in image_dir.iterdir() if p.is_file()}
    missing = [image for image in captions if image not in present]
    _raise_if([f"{image_dir / m}: missing" for m in missing],
              f"{image_dir}: {len(missing)} captioned images missing")
    extra = sorted(n for n in present - captions.keys() if n.lower().endswith(IMAGE_EXTENSIONS))
    if not allow_extra:
        _raise_if([f"{image_dir / e}: no captions" for e in extra],
                  f"{image_dir}: {len(extra)} images without captions (allow_extra_images=True "
                  f"to accept)")


def _raise_if(problems: list[str], summary: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ImageFolderError(f"{summary}:\n  {shown}{more}")


def image_problem(path: Path, check: str = "trailer") -> str | None:
    """What is wrong with one image file (``"<path>: <reason>"``), or None if it passes."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        if check == "full" or (check == "trailer" and fmt not in ("JPEG", "PNG")):
            with Image.open(path) as im, _strict_decoding():
                im.load()
        elif check == "trailer" and not _has_end_marker(path, fmt):
            return f"{path}: truncated ({fmt} end-of-image marker missing)"
    except UnidentifiedImageError:
        return f"{path}: not an image PIL can read"
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises SyntaxError for bad PNG chunks
        return f"{path}: unreadable ({type(e).__name__}: {e})"
    return None


@contextlib.contextmanager
def _strict_decoding():
    """Decode with PIL's ``LOAD_TRUNCATED_IMAGES`` off, whatever another module set it to."""
    saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _has_end_marker(path: Path, fmt: str | None) -> bool:
    """JPEG ends with EOI ``FF D9``, PNG with the ``IEND`` chunk (+ CRC); neither can be cut off."""
    with path.open("rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 1024))
        tail = f.read().rstrip(b"\x00")[-64:]
    marker = b"\xff\xd9" if fmt == "JPEG" else b"IEND\xaeB`\x82"
    return marker in tail
