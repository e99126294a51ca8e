"""Per-layer-type tables: each extension point (shape rules, back ends) is one of these."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class LayerTable(dict[type, F]):
    """Maps a layer model class to the function that handles it, filled by decorating.

    A missing entry is a netspec bug (a layer type without its back-end part), so the error
    names the table and the type.
    """

    def __init__(self, purpose: str):
        super().__init__()
        self.purpose = purpose

    def register(self, *models: type) -> Callable[[F], F]:
        def add(fn: F) -> F:
            for model in models:
                self[model] = fn
            return fn

        return add

    def __missing__(self, model: type) -> F:
        # an entry for a base class (Activation) serves every type derived from it
        for base in model.__mro__[1:]:
            if dict.__contains__(self, base):
                return dict.__getitem__(self, base)
        raise KeyError(f"no {self.purpose} for layer type {model.__name__}")

    def covers(self, model: type) -> bool:
        """Whether this table handles `model`, itself or through a base class."""
        return any(dict.__contains__(self, base) for base in model.__mro__)
