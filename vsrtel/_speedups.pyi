# Types of the optional C helper (vsrtel/_speedups.c); use it through vsrtel._views.
from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")

def view(mapping: Mapping[_K, _V], /) -> MappingProxyType[_K, _V]: ...
