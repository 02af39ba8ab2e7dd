"""Every test gets an isolated default registry (the plugin's ``vsrtel_registry`` fixture)."""

from __future__ import annotations

import pytest

import vsrtel


@pytest.fixture(autouse=True)
def _isolated_default_registry(vsrtel_registry: vsrtel.Registry) -> vsrtel.Registry:
    return vsrtel_registry


@pytest.fixture
def registry() -> vsrtel.Registry:
    """A fresh registry that re-raises handler errors, so a broken test handler is loud."""
    return vsrtel.Registry(on_error="raise")
