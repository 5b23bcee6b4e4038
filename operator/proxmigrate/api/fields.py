"""Typed reads from a spec dict with errors that name the field (`spec.retry.maxAttempts`).

The API server has validated and defaulted what it stores, so these checks catch what it
cannot: objects stored before a schema change, hand-built dicts in tests, a CRD not applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TypeVar, overload

from kubernetes.utils import parse_quantity

T = TypeVar("T")

_parse_quantity: Callable[[object], Decimal] = parse_quantity  # the client ships no types


class _Missing:
    """Marks a field without default: absent means an error."""


_REQUIRED = _Missing()

_EXPECTED = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


class SpecError(ValueError):
    """A spec that cannot be used; the message names the field and is fit for a condition."""


class SpecReader:
    """Reads fields of one object of a spec, remembering where it is for error messages."""

    def __init__(self, data: object, path: str = "spec") -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise SpecError(f"{path}: expected an object, got {type(data).__name__}")
        self._data: Mapping[str, Any] = data
        self.path = path

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def child(self, key: str) -> SpecReader:
        """The nested object `key`, empty when absent (so its defaults apply)."""
        return SpecReader(self._data.get(key), f"{self.path}.{key}")

    @overload
    def get(self, key: str, kind: type[T]) -> T: ...
    @overload
    def get(self, key: str, kind: type[T], default: None) -> T | None: ...
    @overload
    def get(self, key: str, kind: type[T], default: T) -> T: ...

    def get(self, key: str, kind: type[Any], default: Any = _REQUIRED) -> Any:
        """Field `key` as `kind` (str, int, float, bool or a StrEnum), or `default` if absent.

        Without a default the field is required. Integers are accepted for floats; booleans
        are never accepted as numbers.
        """
        value = self._data.get(key)
        if value is None:
            if isinstance(default, _Missing):
                raise SpecError(f"{self.path}.{key} is required")
            return default
        if issubclass(kind, StrEnum):
            try:
                return kind(value)
            except ValueError:
                allowed = ", ".join(member.value for member in kind)
                raise self._error(key, f"one of {allowed}", value) from None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self._error(key, _EXPECTED.get(kind, kind.__name__), value)
        return value

    def quantity(self, key: str, default: int | None = None) -> int | None:
        """A Kubernetes quantity (`2Gi`, `512Mi` or a plain integer) in whole units."""
        value = self._data.get(key)
        if value is None:
            return default
        try:
            return int(_parse_quantity(value))
        except (ValueError, TypeError, InvalidOperation):
            raise self._error(key, "a quantity such as 2Gi", value) from None

    def list_of(self, key: str, kind: type[T]) -> tuple[T, ...]:
        """A list field whose items are all `kind`; empty when absent."""
        value = self._data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list | tuple) or not all(
            isinstance(item, kind) and (kind is bool or not isinstance(item, bool))
            for item in value
        ):
            raise self._error(key, f"a list of {kind.__name__}", value)
        return tuple(value)

    def _error(self, key: str, expected: str, value: object) -> SpecError:
        return SpecError(f"{self.path}.{key}: expected {expected}, got {value!r}")
