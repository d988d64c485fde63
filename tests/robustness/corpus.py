"""A corpus of bad inputs, each a folder a careless user or a hostile file could hand tfod.

Every case builds its input under a fresh folder ROOT and returns the `tfod` arguments to run on
it. ROOT/out already holds a good dataset when the case runs, so a case that fails shows that the
old dataset survives. Images are tiny and generated; nothing is downloaded.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.data.sources import WRITERS, exif_jpeg_bytes, jpeg_bytes


@dataclass(frozen=True)
class Case:
    """One bad input.

    Args:
        id: the test id.
        make: builds the input under ROOT and returns the arguments after `tfod`.
        code: the exit status tfod must give (0: handled, with the problem reported).
        message: a regex the output must match (for errors, the one `error:` line).
    """

    id: str
    make: Callable[[Path], list[str]]
    code: int
    message: str


def _coco(root: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> Path:
    src = root / "src"
    (src / "images").mkdir(parents=True, exist_ok=True)
    for index, entry in enumerate(images):
        name = str(entry.get("file_name", ""))
        path = src / "images" / name
        if name and "/" not in name and not path.exists():
            path.write_bytes(
                jpeg_bytes(int(entry.get("width", 40)), int(entry.get("height", 30)), index)
            )
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (src / "annotations.json").write_text(json.dumps(doc))
    return src


def _one_good(
    extra_images: list[dict] = (), extra_anns: list[dict] = (), cats: list[dict] | None = None
) -> Callable[[Path], Path]:  # type: ignore[assignment]
    """A COCO source with two good images plus `extra_*`."""

    def make(root: Path) -> Path:
        images = [
            {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},
            *extra_images,
        ]
        anns = [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10]},
            *extra_anns,
        ]
        return _coco(root, images, anns, cats or [{"id": 1, "name": "cat"}])

    return make


def _masked(segmentation: object) -> dict:
    """A third box on image 1, with `segmentation` as its mask."""
    return {
        "id": 3,
        "image_id": 1,
        "category_id": 1,
        "bbox": [2, 2, 8, 8],
        "segmentation": segmentation,
    }


def _convert(make_src: Callable[[Path], Path], *options: str) -> Callable[[Path], list[str]]:
    def make(root: Path) -> list[str]:
        src = make_src(root)
        return ["data", "convert", str(src), "--out", str(root / "out"), "--workers", "1", *options]

    return make


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (1-bit grey): what a decompression bomb
    looks like to Pillow before it decodes a pixel."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _with_file(
    name: str, data: bytes, annotated: tuple[int, int] = (40, 30)
) -> Callable[[Path], Path]:
    """Two good images plus image `name` holding `data`, with one box."""

    def make(root: Path) -> Path:
        src = _one_good(
            [{"id": 3, "file_name": name, "width": annotated[0], "height": annotated[1]}],
            [{"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 10, 10]}],
        )(root)
        (src / "images" / name).write_bytes(data)
        return src

    return make


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _yolo(root: Path, names: str = "cat\n", label: str = "0 0.5 0.5 0.2 0.2\n") -> Path:
    src = root / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for stem in ("a", "b"):
        (src / "images" / f"{stem}.jpg").write_bytes(jpeg_bytes(40, 30, ord(stem)))
        (src / "labels" / f"{stem}.txt").write_text(label if stem == "a" else "0 0.5 0.5 0.4 0.4\n")
    (src / "classes.txt").write_text(names)
    return src


def _voc(root: Path, xml: str) -> Path:
    src = root / "src"
    (src / "JPEGImages").mkdir(parents=True)
    (src / "JPEGImages" / "a.jpg").write_bytes(jpeg_bytes(40, 30, 1))
    _write(src / "Annotations" / "a.xml", xml)
    return src


def _linked_images(kind: str) -> Callable[[Path], Path]:
    """A source whose image folder is a symlink to another disk (folder), as users keep data."""

    def make(root: Path) -> Path:
        src = WRITERS[kind](root / "src")
        folder = "JPEGImages" if kind == "voc" else "images"
        elsewhere = root / "bigdisk" / folder
        elsewhere.parent.mkdir()
        (src / folder).rename(elsewhere)
        (src / folder).symlink_to(elsewhere, target_is_directory=True)
        return src

    return make


def _out_is_source(root: Path) -> list[str]:
    """Defect 1: the COCO file is named dataset.json and --out is the source itself."""
    src = _one_good()(root)
    (src / "annotations.json").rename(src / "dataset.json")
    return ["data", "convert", str(src / "dataset.json"), "--out", str(src), "--workers", "1"]


def _out_contains_source(root: Path) -> list[str]:
    """Defect 1: `convert proj/raw --out proj` with a proj/dataset.json."""
    proj = root / "proj"
    _one_good()(proj)  # proj/src is the raw data
    (proj / "dataset.json").write_text('{"tfod_version": "0.1.0", "fingerprint": "sha256:00"}')
    return ["data", "convert", str(proj / "src"), "--out", str(proj), "--workers", "1"]


def _out_inside_source(root: Path) -> list[str]:
    src = _one_good()(root)
    return ["data", "convert", str(src), "--out", str(src / "tfrecords"), "--workers", "1"]


def _out_is_a_file(root: Path) -> list[str]:
    src = _one_good()(root)
    _write(root / "notes.txt", "mine")
    return ["data", "convert", str(src), "--out", str(root / "notes.txt"), "--workers", "1"]


def _out_foreign(root: Path) -> list[str]:
    src = _one_good()(root)
    _write(root / "mine" / "thesis.tex", "years of work")
    return ["data", "convert", str(src), "--out", str(root / "mine"), "--workers", "1"]


def _out_forged(root: Path) -> list[str]:
    """A folder with a dataset.json that tfod did not write (no marker)."""
    src = _one_good()(root)
    _write(root / "forged" / "dataset.json", '{"tfod_version": "0.1.0", "fingerprint": "sha256:1"}')
    return ["data", "convert", str(src), "--out", str(root / "forged"), "--workers", "1"]


def _config(root: Path, text: str) -> list[str]:
    return ["config", "validate", str(_write(root / "tfod.yaml", text))]


def _train(*options: str) -> Callable[[Path], list[str]]:
    """`tfod train` on ROOT/out (the good dataset) with bad command-line values."""

    def make(root: Path) -> list[str]:
        config = _write(
            root / "tfod.yaml",
            f"name: bad\ndata: {{dir: {root / 'out'}}}\nmodel: {{preset: retinanet-mobilenetv2-256-smoke}}\n"
            "train: {steps: 4, batch_size: 4}\n",
        )
        return ["train", str(config), "--runs-dir", str(root / "runs"), *options]

    return make


GOOD = [{"id": 1, "name": "cat"}]
CASES = [
    # --- sources tfod cannot read at all: one line, the old dataset kept -----------------------
    Case(
        "missing-source",
        lambda r: ["data", "convert", str(r / "nowhere"), "--out", str(r / "out")],
        1,
        "does not exist",
    ),
    Case(
        "empty-folder",
        _convert(lambda r: (r / "src").mkdir() or r / "src"),
        1,
        "cannot tell the annotation format",
    ),
    Case(
        "broken-json",
        _convert(lambda r: _write(r / "src" / "a.json", "{").parent),
        1,
        "cannot read COCO JSON",
    ),
    Case(
        "json-not-coco",
        _convert(lambda r: _write(r / "src" / "a.json", "[1, 2]").parent),
        1,
        "no 'images' list",
    ),
    Case(
        "coco-no-categories",
        _convert(lambda r: _write(r / "src" / "a.json", '{"images": []}').parent),
        1,
        "no 'categories' list",
    ),
    Case(
        "coco-category-without-id",
        _convert(lambda r: _coco(r, [], [], [{"name": "cat"}])),
        1,
        "integer 'id'",
    ),
    Case(
        "coco-one-name-two-ids",
        _convert(lambda r: _coco(r, [], [], [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}])),
        1,
        "share one name",
    ),
    Case(
        "coco-utf16",
        _convert(
            lambda r: (
                _write(r / "src" / "x.txt", ""),
                (r / "src" / "a.json").write_bytes('{"images": []}'.encode("utf-16")),
                r / "src",
            )[2]
        ),
        1,
        "cannot read COCO JSON",
    ),
    Case(
        "csv-missing-column",
        _convert(lambda r: _write(r / "src" / "a.csv", "a,b\n1,2\n").parent),
        1,
        "missing column",
    ),
    Case(
        "csv-empty-file",
        _convert(lambda r: _write(r / "src" / "a.csv", "").parent),
        1,
        r"error:.*a\.csv",
    ),
    Case(
        "yolo-no-names",
        _convert(lambda r: _write(r / "src" / "data.yaml", "k: 1").parent),
        1,
        "no class names",
    ),
    Case(
        "yolo-bad-yaml",
        _convert(lambda r: _write(r / "src" / "data.yaml", "names: [a, b").parent),
        1,
        "not valid YAML",
    ),
    Case(
        "yolo-python-tag",
        _convert(
            lambda r: (
                _write(
                    r / "src" / "data.yaml", "names: !!python/object/apply:os.system ['echo hi']"
                ).parent
            )
        ),
        1,
        "not valid YAML",
    ),
    Case(
        "single-unknown-file",
        lambda r: [
            "data",
            "convert",
            str(_write(r / "src" / "a.txt", "x")),
            "--out",
            str(r / "out"),
        ],
        1,
        "must be a COCO .json or a .csv",
    ),
    Case(
        "unknown-format",
        _convert(lambda r: WRITERS["coco"](r / "src"), "--format", "pascal"),
        1,
        "unknown format",
    ),
    Case(
        "val-fraction-too-big",
        _convert(lambda r: WRITERS["coco"](r / "src"), "--val-fraction", "1.5"),
        1,
        "--val-fraction",
    ),
    Case(
        "workers-zero",
        lambda r: [
            "data",
            "convert",
            str(WRITERS["coco"](r / "src")),
            "--out",
            str(r / "out"),
            "--workers",
            "0",
        ],
        1,
        "--workers",
    ),
    Case(
        "classes-empty",
        _convert(lambda r: WRITERS["coco"](r / "src"), "--classes", ",,"),
        1,
        "--classes",
    ),
    Case(
        "difficult-bogus",
        _convert(lambda r: WRITERS["voc"](r / "src"), "--difficult", "maybe"),
        1,
        "--difficult",
    ),
    # --- sources that hold nothing usable: an error that writes nothing (defect 5) -------------
    Case(
        "every-image-missing",
        _convert(
            lambda r: (
                _one_good()(r),
                [p.unlink() for p in (r / "src" / "images").iterdir()],
                r / "src",
            )[2]
        ),
        1,
        "no usable image",
    ),
    Case(
        "no-boxes-at-all",
        _convert(
            lambda r: _coco(
                r,
                [
                    {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
                    {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},
                ],
                [],
                GOOD,
            )
        ),
        1,
        "no usable box",
    ),
    Case(
        "every-box-outside",
        _convert(
            lambda r: _coco(
                r,
                [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
                [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 5, 5]}],
                GOOD,
            )
        ),
        1,
        "no usable box",
    ),
    Case(
        "voc-invalid-xml-only",
        _convert(lambda r: _voc(r, "<annotation><object>")),
        1,
        "no labelled boxes",
    ),
    Case(
        "voc-xxe",
        _convert(
            lambda r: _voc(
                r,
                '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation><filename>a.jpg</filename><object><name>&x;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>',
            )
        ),
        1,
        "no labelled boxes",
    ),
    Case(
        "voc-billion-laughs",
        _convert(
            lambda r: _voc(
                r,
                '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;"><!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]><annotation><filename>a.jpg</filename><object><name>&h;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>',
            )
        ),
        1,
        "no labelled boxes",
    ),
    # --- where the output would go: refused, nothing touched (defects 1 and 13) ----------------
    Case("out-is-the-source", _out_is_source, 1, "would replace a folder holding the source"),
    Case(
        "out-contains-the-source",
        _out_contains_source,
        1,
        "would replace a folder holding the source",
    ),
    Case("out-inside-the-source", _out_inside_source, 1, "lies inside the source"),
    Case("out-is-a-file", _out_is_a_file, 1, "exists and is not a folder"),
    Case("out-foreign-folder", _out_foreign, 1, "not a dataset tfod wrote"),
    Case("out-forged-dataset-json", _out_forged, 1, "not a dataset tfod wrote"),
    # --- bad entries among good ones: counted, reported skips; the rest converts ---------------
    Case(
        "path-escapes-with-dotdot",
        _convert(
            _one_good([{"id": 3, "file_name": "../../../etc/passwd", "width": 4, "height": 4}])
        ),
        0,
        "path_escapes_source",
    ),
    Case(
        "absolute-path-elsewhere",
        _convert(_one_good([{"id": 3, "file_name": "/etc/hostname", "width": 4, "height": 4}])),
        0,
        "path_escapes_source",
    ),
    Case("zero-byte-image", _convert(_with_file("z.jpg", b"")), 0, "unreadable_image"),
    Case(
        "text-named-jpg",
        _convert(_with_file("t.jpg", b"hello, I am not a picture")),
        0,
        "unreadable_image",
    ),
    Case(
        "truncated-jpeg",
        _convert(_with_file("t.jpg", jpeg_bytes(40, 30, 9)[:200])),
        0,
        "unreadable_image",
    ),
    Case(
        "bomb-20000px",
        _convert(_with_file("bomb.png", _png_header(20000, 20000))),
        0,
        "unreadable_image",
    ),
    Case(
        "bomb-10000px",
        _convert(_with_file("big.png", _png_header(10000, 10000))),
        0,
        "unreadable_image",
    ),
    Case(
        "exif-rotated-annotated-as-stored",
        _convert(_with_file("side.jpg", exif_jpeg_bytes(40, 30, 6, 3), (40, 30))),
        0,
        "exif_rotated",
    ),
    Case(
        "coco-duplicate-image-ids",
        _convert(
            _one_good(
                [
                    {"id": 3, "file_name": "c.jpg", "width": 40, "height": 30},
                    {"id": 3, "file_name": "d.jpg", "width": 40, "height": 30},
                ],
                [{"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]}],
            )
        ),
        0,
        "duplicate_id",
    ),
    Case(
        "coco-image-id-is-a-list",
        _convert(
            _one_good([], [{"id": 3, "image_id": [1], "category_id": 1, "bbox": [1, 1, 5, 5]}])
        ),
        0,
        "bad_annotation",
    ),
    Case(
        "coco-bbox-of-words",
        _convert(
            _one_good(
                [], [{"id": 3, "image_id": 1, "category_id": 1, "bbox": ["a", "b", "c", "d"]}]
            )
        ),
        0,
        "bad_annotation",
    ),
    Case(
        "coco-nan-bbox",
        _convert(
            _one_good([], [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, "nan", 4]}])
        ),
        0,
        "invalid_box",
    ),
    Case(
        "coco-unknown-category",
        _convert(
            _one_good([], [{"id": 3, "image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5]}])
        ),
        0,
        "unknown_class",
    ),
    Case(
        "class-name-with-newline",
        _convert(_one_good(cats=[{"id": 1, "name": "cat\nfood"}])),
        0,
        "bad_class_name",
    ),
    Case(
        "class-name-with-nul-and-tab",
        _convert(_one_good(cats=[{"id": 1, "name": "c\x00a\tt"}])),
        0,
        "bad_class_name",
    ),
    Case(
        "coco-rle-counts-outside-cocos-encoding",  # pycocotools' C decoder would trust them
        _convert(_one_good(extra_anns=[_masked({"size": [30, 40], "counts": "!!#%&9"})])),
        0,
        "invalid_mask",
    ),
    Case(
        "coco-rle-mask-bomb",
        _convert(_one_good(extra_anns=[_masked({"size": [10**5, 10**5], "counts": [10**10]})])),
        0,
        "invalid_mask",
    ),
    Case(
        "coco-polygon-a-billion-sides-away",  # rasterising walks each edge's length
        _convert(_one_good(extra_anns=[_masked([[0, 0, 1e12, 0, 0, 1e12]])])),
        0,
        "invalid_mask",
    ),
    Case(
        "yolo-four-fields",
        _convert(lambda r: _yolo(r, label="0 0.5 0.5 0.2\n")),
        0,
        "bad_annotation",
    ),
    Case(
        "yolo-class-index-too-big",
        _convert(lambda r: _yolo(r, label="7 0.5 0.5 0.2 0.2\n")),
        0,
        "unknown_class",
    ),
    Case(
        "yolo-class-name-with-tab",
        _convert(lambda r: _yolo(r, names="big\tcat\n")),
        0,
        "bad_class_name",
    ),
    Case("symlinked-images-coco", _convert(_linked_images("coco")), 0, "No problems found"),
    Case("symlinked-images-yolo", _convert(_linked_images("yolo")), 0, "No problems found"),
    Case("symlinked-images-voc", _convert(_linked_images("voc")), 0, "No problems found"),
    # --- bad settings (defect 9) and bad config files ------------------------------------------
    Case(
        "train-negative-steps",
        _train("--steps", "-5"),
        1,
        "--steps must be a whole number of at least 1",
    ),
    Case(
        "train-zero-steps",
        _train("--steps", "0"),
        1,
        "--steps must be a whole number of at least 1",
    ),
    Case(
        "train-zero-batch",
        _train("--batch-size", "0"),
        1,
        "--batch-size must be a whole number of at least 1",
    ),
    Case(
        "train-negative-batch",
        _train("--batch-size", "-8"),
        1,
        "--batch-size must be a whole number of at least 1",
    ),
    Case("config-not-yaml", lambda r: _config(r, "name: [unclosed"), 1, r"error:.*tfod\.yaml"),
    Case(
        "config-python-tag",
        lambda r: _config(r, "name: !!python/object/apply:os.system ['echo hi']\n"),
        1,
        r"error:.*tfod\.yaml",
    ),
    Case(
        "config-missing-file",
        lambda r: ["config", "validate", str(r / "nope.yaml")],
        1,
        r"error:.*nope\.yaml",
    ),
]
