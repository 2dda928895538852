"""How `make unit` shares the tests between its workers (``pytest -n JOBS --dist loadgroup``).

Every test file goes to one worker whole (its module fixtures are built once), except the stand-ins of the
`full` profiles (``test_full_profiles.py``): each of those runs a whole chapter in its own temporary folders and
took 10-28 s (``--durations``, 2026-12-03), 111 s of the 139 s all tests took with every file on one worker, so
they are shared out one by one (then 93 s in all).
"""

from __future__ import annotations

import pytest

SHARED_ONE_BY_ONE = {"test_full_profiles.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        one_by_one = item.path.name in SHARED_ONE_BY_ONE
        item.add_marker(pytest.mark.xdist_group(item.nodeid if one_by_one else str(item.path)))
