"""The pytest plugin of vsrtel (entry point ``pytest11``): the ``vsrtel_registry`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vsrtel._registry import Registry, default_registry


@pytest.fixture
def vsrtel_registry() -> Iterator[Registry]:
    """Give the test an empty default registry; the previous handlers come back afterwards."""
    with default_registry.isolated() as registry:
        yield registry
