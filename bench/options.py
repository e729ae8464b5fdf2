"""The one ``key=value`` option grammar, shared by extractor specs, adaptation methods and
protocol options written in specs::

    options := key "=" value { "," key "=" value }
    value   := int | float | true | false | none | item "+" item ...   (a '+' makes a list)

Anything else stays a string. ``format_value`` writes a value back so that ``parse_value``
reads the same value.
"""
from __future__ import annotations

from typing import Any

from featbench.errors import FeatbenchError


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"none"`` -> None, ``"1+2"`` -> [1, 2]."""
    if "+" in text:
        return [parse_value(t) for t in text.split("+")]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def format_value(value: Any) -> str:
    """The inverse of :func:`parse_value`."""
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_options(text: str, what: str) -> dict[str, Any]:
    """``"k=400,levels=1+2"`` -> ``{"k": 400, "levels": [1, 2]}``; ``what`` names the spec in errors."""
    options: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise FeatbenchError(f"{what}: option '{item}' is not key=value")
        options[key.strip()] = parse_value(value.strip())
    return options
