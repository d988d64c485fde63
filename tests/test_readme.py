"""Every code block of the README is run by a test or by `.ci/run`: the registry below names which,
and this file checks that the block is still there and that its runner reads it from the README
(a runner holding its own copy would pass while the README drifts)."""

from __future__ import annotations

import re

from tests.helpers import ROOT, readme_blocks, readme_commands

# (heading, language) -> the tests that read and run the block (file::function).
RUNNERS = {
    ("tfod", "bash"): ["tests/test_readme.py::test_ci_runs_the_first_blocks_commands"],
    ("Train on your own images", "bash"): [
        "tests/zoo/test_zoo.py::test_the_readme_path_fine_tunes_from_the_zoo_exports_verifies_and_predicts"
    ],
    ("In containers", "bash"): [
        "tests/docker/test_images.py::test_the_readmes_compose_lines_name_files_profiles_and_services_that_exist",
        "tests/docker/test_images.py::test_compose_up_trains_evaluates_serves_tensorboard_and_exports",
    ],
    ("In a notebook or a script", "python"): ["tests/test_api.py::test_the_readme_snippet_runs"],
    ("Ship the model", "python"): [
        "tests/export/test_runtimes.py::test_the_readme_python_lines_load_the_exported_files"
    ],
}
# Blocks no machine of ours can run, and why.
NOT_RUN = {
    ("Ship the model", "kotlin"): "an Android app's code: no Android toolchain here; its Python "
    "twin (MediaPipe's create_from_model_path on the same file) is run",
}


def test_every_block_has_a_runner_that_reads_it_from_the_readme() -> None:
    blocks = {(section, language) for section, language, _ in readme_blocks()}
    assert blocks == set(RUNNERS) | set(NOT_RUN), "a README block without a runner (or a stale one)"
    for (section, _), runners in RUNNERS.items():
        for runner in runners:
            path, name = runner.split("::")
            source = (ROOT / path).read_text(encoding="utf-8")
            body = re.search(rf"\ndef {name}\(.*?(?=\n(?:def |@|class )|\Z)", source, re.S)
            assert body, f"{runner} is gone"
            reads = body.group(0) + _helpers_it_calls(source, body.group(0))
            assert f'"{section}"' in reads, f"{runner} does not read the block {section!r}"


def _helpers_it_calls(source: str, body: str) -> str:
    """The module's own functions that `body` calls (a test may read the block through one)."""
    called = set(re.findall(r"\b(_\w+)\(", body))
    return "".join(
        m.group(0)
        for m in re.finditer(r"\ndef (_\w+)\(.*?(?=\n(?:def |@|class )|\Z)", source, re.S)
        if m.group(1) in called
    )


def test_ci_runs_the_first_blocks_commands() -> None:
    """The two commands a fresh machine starts with: `.ci/run` installs the same nox, runs the
    test command verbatim and the demo command with fewer steps (the demo's whole run, and its
    time and AP, are `nox -s bench -- demo`)."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    (install, run_demo), (same_install, run_tests) = (
        " ".join(words).split(" && ") for words in readme_commands("tfod")
    )
    assert install == same_install
    nox = re.search(r"nox\[uv\]==[\w.]+", install)
    assert nox and f'"{nox.group(0)}"' in ci
    assert run_tests in ci
    assert f"{run_demo} -- --steps" in ci
