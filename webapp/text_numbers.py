"""Whole numbers typed by people or scripts (query strings, form fields, websocket messages), read one way.

``str.isdigit()`` says yes to a superscript two and to 5,000 digits, which ``int()`` refuses (a 500 where it was
trusted) or a database column cannot hold; :func:`whole_number` takes ASCII digits only, and at most
``MAX_DIGITS`` of them. :func:`quoted` shows what was typed in a message without echoing kilobytes back.
"""

from __future__ import annotations

MAX_DIGITS = 18  # ids, positions, iterations, days: no more (int() refuses over 4,300 digits; a database 2**63)


def whole_number(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """``text`` (surrounding spaces ignored) as a whole number >= 0 written in at most ``max_digits`` ASCII digits,
    else None."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= max_digits else None


def quoted(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message: at most ``limit`` characters of it, and its length when cut."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
