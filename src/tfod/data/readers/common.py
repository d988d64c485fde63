"""What every reader shares: finding an image named by an annotation, safely, inside the source.

"Inside the source" is a question about the paths *written in annotation files*: `../x.jpg` or an
absolute path elsewhere is refused. Links the user placed inside the source folder (an `images/`
folder that is a symlink to another disk) are followed, so containment is decided on the path as
written, normalised, never on where its symlinks lead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from tfod.data.annotations import Kind, Problem

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def lexical(path: Path) -> Path:
    """`path` made absolute and normalised (`..` and `.` removed) without following links."""
    return Path(os.path.normpath(Path.cwd() / path))


def relative(root: Path, path: Path) -> str:
    """`path` relative to `root` in POSIX form, or as given if it is elsewhere."""
    try:
        return lexical(path).relative_to(lexical(root)).as_posix()
    except ValueError:
        return str(path)


def walk_files(root: Path, suffixes: frozenset[str] | None = None) -> Iterator[Path]:
    """Every file under `root` (optionally only those with one of `suffixes`), sorted, following
    symlinked folders (each real folder visited once, so a link loop ends)."""
    seen: set[str] = set()
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        for name in files:
            path = Path(folder) / name
            if suffixes is None or path.suffix.lower() in suffixes:
                found.append(path)
    yield from sorted(found)


class ImageLocator:
    """Resolves image names from annotation files to files inside the source folder.

    Names are tried against each candidate base folder in turn. A name that points outside the
    source folder as written (`../../etc/passwd`, an absolute path elsewhere) is rejected; links
    inside the source folder are followed. Every failure is appended to `problems`.
    """

    def __init__(self, root: Path, problems: list[Problem]) -> None:
        self.root = lexical(root)
        self.problems = problems

    def locate(
        self, name: str, bases: list[Path], annotation: str, boxes: int
    ) -> tuple[Path, str] | None:
        """Return (absolute path, path relative to the root) of the image `name`, or None.

        Args:
            name: the image name as the annotation writes it.
            bases: folders to try, most likely first.
            annotation: the annotation file (relative), for problem messages.
            boxes: how many boxes the image carries, so a skip says what it costs.
        """
        name = name.strip()
        lost = f" ({boxes} box{'es' if boxes != 1 else ''} lost)" if boxes else ""
        if not name:
            self.problems.append(Problem(Kind.BAD_ANNOTATION, annotation, "empty image name"))
            return None
        tried: list[str] = []
        for base in bases:
            candidate = lexical(base / name)
            if not candidate.is_relative_to(self.root):
                self.problems.append(
                    Problem(
                        Kind.PATH_ESCAPES_SOURCE,
                        annotation,
                        f"image {name!r} points to {candidate}, outside the source folder{lost}",
                    )
                )
                return None
            if candidate.is_file():
                return candidate, candidate.relative_to(self.root).as_posix()
            tried.append(candidate.relative_to(self.root).as_posix())
        self.problems.append(
            Problem(
                Kind.MISSING_IMAGE,
                annotation,
                f"image {name!r} not found (looked for {', '.join(dict.fromkeys(tried))}){lost}",
            )
        )
        return None
