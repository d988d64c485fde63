"""The container tests run on three workers (`nox -s docker`): each compose stack is a group of
its own (`xdist_group`), handed out first so that no two stacks queue on one worker; the image
checks fill the gaps."""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)  # after the suite's own ordering (tests/conftest.py)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)  # stable
