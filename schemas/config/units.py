"""Human units in YAML: durations ("90s", "12 hours", 30) and sizes ("48GB", "22.5 GB", "500MB").

Both are float/int subclasses, so the rest of the code uses them as plain seconds and bytes.
"""

from __future__ import annotations

import re
from typing import Any

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "w": 604800,
    "week": 604800,
}
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_NUM_UNIT = re.compile(r"^\s*~?\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[a-zA-Z]*)\s*$")


class Duration(float):
    """Seconds. Accepts a number (seconds) or "250ms", "90s", "5m", "12h", "12 hours", "7d"."""

    @classmethod
    def parse(cls, value: Any) -> Duration:
        if isinstance(value, bool):
            raise TypeError("expected a duration such as '30s', '5m' or '12 hours'")
        if isinstance(value, int | float):
            if value < 0:
                raise ValueError("a duration must not be negative")
            return cls(value)
        if not isinstance(value, str):
            raise TypeError("expected a duration such as '30s', '5m' or '12 hours'")
        m = _NUM_UNIT.match(value)
        unit = (m.group("unit").lower() if m else "") or "s"
        if unit.endswith("s") and unit not in _DURATION_UNITS:
            unit = unit[:-1]  # hours -> hour, mins -> min
        if not m or unit not in _DURATION_UNITS:
            raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m, h, d or w")
        return cls(float(m.group("num")) * _DURATION_UNITS[unit])

    def __repr__(self) -> str:
        return f"Duration({float(self)}s)"


class ByteSize(int):
    """Bytes. Accepts an integer (bytes) or "48GB", "22.5 GB", "500MB", "3.77GiB" (GB = 10^9)."""

    @classmethod
    def parse(cls, value: Any) -> ByteSize:
        if isinstance(value, bool):
            raise TypeError("expected a size such as '48GB' or '500MB'")
        if isinstance(value, int | float):
            if value < 0:
                raise ValueError("a size must not be negative")
            return cls(int(value))
        if not isinstance(value, str):
            raise TypeError("expected a size such as '48GB' or '500MB'")
        m = _NUM_UNIT.match(value)
        unit = (m.group("unit").lower() if m else "") or "b"
        if not m or unit not in _SIZE_UNITS:
            raise ValueError(f"invalid size {value!r}: use a number with B, KB, MB, GB, TB (or KiB, MiB, GiB)")
        return cls(int(float(m.group("num")) * _SIZE_UNITS[unit]))

    def __repr__(self) -> str:
        return f"ByteSize({self / 1e9:g}GB)"


def dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Duration:
        return Duration.parse(obj)
    if type_ is ByteSize:
        return ByteSize.parse(obj)
    raise NotImplementedError(f"unsupported config type {type_!r}")


def enc_hook(obj: Any) -> Any:
    if isinstance(obj, Duration):
        return float(obj)
    if isinstance(obj, ByteSize):
        return int(obj)
    raise NotImplementedError(f"cannot encode {type(obj)!r}")
