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
        raise KeyError(f"no {self.purpose} for layer type {model.__name__}")
