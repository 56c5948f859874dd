"""A registry of named backends (deblur, depth): factories called with the user's options.

A backend whose module is heavy (torch models, weights) is listed by module name and imported
only when asked for by name; importing it registers its factory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from trainset.errors import InputError
from trainset.store.hashing import params_hash

B = TypeVar("B")


class BackendRegistry(Generic[B]):
    """Factories of ``kind`` backends by name; ``lazy`` maps names to modules registering them.
    Errors name the command-line ``flag`` that chose the backend (and ``{flag}-option``)."""

    def __init__(
        self,
        kind: str,
        factories: Mapping[str, Callable[..., B]] | None = None,
        lazy: Mapping[str, str] | None = None,
        *,
        flag: str = "--backend",
    ) -> None:
        self.kind = kind
        self.flag = flag
        self._factories: dict[str, Callable[..., B]] = dict(factories or {})
        self._lazy = dict(lazy or {})
        self._built: dict[str, B] = {}

    def register(self, name: str, factory: Callable[..., B]) -> None:
        """Make ``make(name, **options)`` call ``factory(**options)``."""
        self._factories[name] = factory

    def names(self) -> list[str]:
        """Registered names plus those that register on import."""
        return sorted(set(self._factories) | set(self._lazy))

    def make(self, name: str, **options: object) -> B:
        """Build backend ``name`` with ``options``; InputError for an unknown name, a module
        that cannot be imported, or options the factory does not take."""
        if name not in self._factories and name in self._lazy:
            try:
                importlib.import_module(self._lazy[name])
            except ImportError as exc:
                raise InputError(
                    f"{self.kind} backend '{name}' cannot be imported: {exc}",
                    key=self.flag,
                    expected=f"an installed {self._lazy[name]}",
                    found=str(exc),
                ) from exc
        factory = self._factories.get(name)
        if factory is None:
            raise InputError(
                f"unknown {self.kind} backend", key=self.flag, expected=self.names(), found=name
            )
        try:
            return factory(**options)
        except TypeError as exc:
            raise InputError(
                f"{self.kind} backend '{name}' rejected its options: {exc}",
                key=f"{self.flag}-option",
                expected="options the backend takes",
                found=sorted(options),
            ) from exc

    def shared(self, name: str, **options: object) -> B:
        """``make(name, **options)`` built once per process and reused (a model backend keeps
        its weights between scenes)."""
        key = params_hash({"backend": name, "options": options})
        if key not in self._built:
            self._built[key] = self.make(name, **options)
        return self._built[key]
