"""The GitHub workflow for real users cannot run here; it must at least parse and build what the
Dockerfile defines, and test inside the image it pushed."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_images_workflow_builds_every_target_and_tests_in_the_pulled_image() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())
    stages = set(
        re.findall(r"^FROM \S+ AS (\S+)", (ROOT / "docker" / "Dockerfile").read_text(), re.M)
    )
    build = workflow["jobs"]["build"]
    targets = build["strategy"]["matrix"]["target"]
    assert set(targets) == {"export", "train", "test"} <= stages
    push = next(
        s for s in build["steps"] if s.get("uses", "").startswith("docker/build-push-action")
    )
    assert push["with"]["file"] == "docker/Dockerfile"
    assert push["with"]["target"] == "${{ matrix.target }}"
    test = workflow["jobs"]["test-in-image"]
    assert test["needs"] == "build"
    script = test["steps"][-1]["run"]
    assert "docker pull" in script and "nox -s lint tests" in script
