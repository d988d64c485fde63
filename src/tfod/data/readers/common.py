"""What every reader shares: finding an image named by an annotation, safely, inside the source."""

from __future__ import annotations

from pathlib import Path

from tfod.data.annotations import Kind, Problem

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def relative(root: Path, path: Path) -> str:
    """`path` relative to `root` in POSIX form, or as given if it is elsewhere."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


class ImageLocator:
    """Resolves image names from annotation files to files inside the source folder.

    Names are tried against each candidate base folder in turn. A name that resolves outside the
    source folder (`../../etc/passwd`, an absolute path elsewhere, a symlink out) is rejected.
    Every failure is appended to `problems`.
    """

    def __init__(self, root: Path, problems: list[Problem]) -> None:
        self.root = root.resolve()
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
            candidate = (base / name).resolve()
            if not candidate.is_relative_to(self.root):
                self.problems.append(
                    Problem(
                        Kind.PATH_ESCAPES_SOURCE,
                        annotation,
                        f"image {name!r} resolves to {candidate}, outside the source folder{lost}",
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
