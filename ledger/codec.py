"""Canonical msgpack encoding and strict decoding of consensus-critical data.

This module is the project's one shared codec helper: `fl` and `storage` may
import it (and nothing else from `ledger`), so it imports nothing from the
project itself.

Canonical form (DESIGN.md section 3):

* only ``None``, ``bool``, ``int`` (-2**63 .. 2**64-1), ``bytes``, ``str``,
  lists and string-keyed maps are encodable; floats and ext types never are;
* maps are written with their keys sorted (by UTF-8 bytes) and decoders
  reject unsorted or duplicate keys;
* a *record* (a frozen dataclass registered with :func:`record`) is written as
  an array ``[tag, field_1, ..., field_n]`` in declaration order, so field
  order is fixed by the class, never by a dict;
* decoding re-encodes the result and compares bytes: any non-minimal integer,
  ``str`` used for ``bytes``, trailing byte or unusual layout is rejected, so
  one value has exactly one encoding and its hash is stable everywhere.

Every failure is a :class:`CodecError`; nothing else escapes ``decode``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import msgpack

__all__ = [
    "CodecError",
    "DEFAULT_MAX_SIZE",
    "decode",
    "decode_record",
    "encode",
    "hash_bytes",
    "record",
    "record_types",
    "sha256",
    "to_plain",
]

DEFAULT_MAX_SIZE = 4 * 1024 * 1024  # blocks carry CIDs, not weights; 4 MiB is generous
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_MAX_DEPTH = 32


class CodecError(ValueError):
    """Raised for anything that is not a canonical encoding of a known value."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------- plain values

# record class -> (tag, field names); filled on first use, so encoding does no reflection
_RECORD_LAYOUT: dict[type, tuple[int, tuple[str, ...]]] = {}


def _layout(cls: type) -> tuple[int, tuple[str, ...]]:
    got = _RECORD_LAYOUT.get(cls)
    if got is None:
        tag = getattr(cls, "_codec_tag", None)
        if tag is None or not dataclasses.is_dataclass(cls):
            raise CodecError(f"type {cls.__name__} is not encodable")
        got = (tag, tuple(f.name for f in dataclasses.fields(cls)))
        _RECORD_LAYOUT[cls] = got
    return got


def _canonical(obj: Any, depth: int = 0) -> Any:
    """Check a value and return its plain form: records become arrays, maps get sorted keys.

    One walk does both the validity check and the conversion (hot path: block and state
    encoding), so every rule of the canonical form is enforced here.
    """
    t = type(obj)
    if t is bytes or t is str or t is bool or obj is None:
        return obj
    if t is int:
        if not _INT_MIN <= obj <= _INT_MAX:
            raise CodecError(f"integer out of range: {obj}")
        return obj
    if depth > _MAX_DEPTH:
        raise CodecError("nesting too deep")
    if t is list or t is tuple:
        return [_canonical(x, depth + 1) for x in obj]
    if t is dict:
        out = {}
        for k in sorted(obj, key=_key_bytes):
            out[k] = _canonical(obj[k], depth + 1)
        return out
    if t is float:
        raise CodecError("floats are not allowed in canonical data")
    if isinstance(obj, int) and not isinstance(obj, bool):  # IntEnum and friends
        return _canonical(int(obj), depth)
    if isinstance(obj, bytes):  # subclasses: encode as the plain value
        return bytes(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    tag, names = _layout(t)
    return [tag, *(_canonical(getattr(obj, n), depth + 1) for n in names)]


def _key_bytes(k: Any) -> bytes:
    if not isinstance(k, str):
        raise CodecError(f"map keys must be str, got {type(k).__name__}")
    return k.encode("utf-8")


def encode(obj: Any) -> bytes:
    """Canonical msgpack bytes of a plain value or record."""
    plain = _canonical(obj)
    try:
        return msgpack.packb(plain, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as e:  # pragma: no cover - guarded above
        raise CodecError(str(e)) from e


def _reject_ext(code: int, data: bytes) -> Any:
    raise CodecError(f"ext type {code} is not allowed")


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    last: bytes | None = None
    for k, v in pairs:
        if not isinstance(k, str):
            raise CodecError("map keys must be str")
        kb = k.encode("utf-8")
        if last is not None and kb <= last:
            raise CodecError("map keys not sorted or duplicated")
        last = kb
        out[k] = v
    return out


def decode(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Strictly decode canonical bytes into plain values (lists, dicts, ...)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise CodecError(f"input of {len(data)} bytes exceeds limit {max_size}")
    if not data:
        raise CodecError("empty input")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_reject_ext,
            object_pairs_hook=_pairs_hook,
        )
    except CodecError:
        raise
    except msgpack.ExtraData as e:
        raise CodecError("trailing bytes after value") from e
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise CodecError(f"malformed msgpack: {type(e).__name__}: {e}") from e
    try:
        canonical = encode(obj)
    except RecursionError as e:
        raise CodecError("nesting too deep") from e
    if canonical != data:
        raise CodecError("non-canonical encoding")
    return obj


def hash_bytes(obj: Any) -> bytes:
    """SHA-256 of the canonical encoding."""
    return sha256(encode(obj))


# ---------------------------------------------------------------- records

T = TypeVar("T")
_REGISTRY: dict[int, type] = {}


def record(tag: int) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as a record with a unique integer tag.

    Field annotations drive strict decoding: ``int``, ``bool``, ``bytes``,
    ``str``, ``X | None``, ``list[X]``/``tuple[X, ...]``, ``dict[str, X]``,
    another record class, or a record base class (any registered subclass is
    accepted: that is how a field holds one of several transaction bodies).
    """

    def wrap(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        if tag in _REGISTRY and _REGISTRY[tag] is not cls:
            raise TypeError(f"record tag {tag} already used by {_REGISTRY[tag].__name__}")
        cls._codec_tag = tag  # type: ignore[attr-defined]
        _REGISTRY[tag] = cls
        return cls

    return wrap


def record_types() -> dict[int, type]:
    return dict(_REGISTRY)


_HINTS: dict[type, list[tuple[str, Any]]] = {}


def _hints(cls: type) -> list[tuple[str, Any]]:
    got = _HINTS.get(cls)
    if got is None:
        hints = get_type_hints(cls)
        got = [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]
        _HINTS[cls] = got
    return got


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except CodecError as e:
                errors.append(str(e))
        raise CodecError(f"{path}: no union member matches ({'; '.join(errors)})")
    if tp is bool:
        if not isinstance(value, bool):
            raise CodecError(f"{path}: expected bool, got {type(value).__name__}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise CodecError(f"{path}: expected int, got {type(value).__name__}")
        return value
    if tp is bytes:
        if not isinstance(value, bytes):
            raise CodecError(f"{path}: expected bytes, got {type(value).__name__}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise CodecError(f"{path}: expected str, got {type(value).__name__}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise CodecError(f"{path}: expected array, got {type(value).__name__}")
        args = get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise CodecError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _convert(v, a, f"{path}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        conv = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(conv) if origin is tuple else conv
    if origin is dict:
        if not isinstance(value, dict):
            raise CodecError(f"{path}: expected map, got {type(value).__name__}")
        vt = get_args(tp)[1] if get_args(tp) else Any
        return {k: _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type):  # a record class, or a base class of registered records
        return _from_plain_record(value, tp, path)
    raise CodecError(f"{path}: unsupported annotation {tp!r}")  # pragma: no cover


def _from_plain_record(value: Any, cls: type, path: str) -> Any:
    if not isinstance(value, list) or not value:
        raise CodecError(f"{path}: expected a record array for {cls.__name__}")
    tag = value[0]
    if not isinstance(tag, int) or isinstance(tag, bool):
        raise CodecError(f"{path}: record tag must be int")
    actual = _REGISTRY.get(tag)
    if actual is None:
        raise CodecError(f"{path}: unknown type tag {tag}")
    if not issubclass(actual, cls):
        raise CodecError(f"{path}: type tag {tag} ({actual.__name__}) is not a {cls.__name__}")
    fields = _hints(actual)
    if len(value) - 1 != len(fields):
        raise CodecError(
            f"{path}: {actual.__name__} needs {len(fields)} fields, got {len(value) - 1}"
        )
    kwargs = {
        name: _convert(v, tp, f"{path}.{name}")
        for (name, tp), v in zip(fields, value[1:], strict=True)
    }
    try:
        obj = actual(**kwargs)
    except (TypeError, ValueError) as e:  # __post_init__ validation
        raise CodecError(f"{path}: invalid {actual.__name__}: {e}") from e
    return obj


def decode_record(data: bytes, cls: type[T], max_size: int = DEFAULT_MAX_SIZE) -> T:
    """Strictly decode bytes into an instance of ``cls`` (or a registered subclass)."""
    plain = decode(data, max_size=max_size)
    try:
        return typing.cast(T, _from_plain_record(plain, cls, cls.__name__))
    except RecursionError as e:
        raise CodecError("nesting too deep") from e


def to_plain(obj: Any) -> Any:
    """The plain (list/dict) form that :func:`encode` writes; useful for JSON views."""
    return _canonical(obj)
