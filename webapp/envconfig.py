"""Typed reading of the environment for ``webapp/settings.py`` (the one place that reads it).

``Env`` wraps django-environ's parser with strict types and errors that name the variable and its value:
``PTYCHOPY_FRAME_RATE_HZ='fast' is not a number (e.g. 5)``. An unset or empty variable takes the default.
Every read is noted in ``Env.read`` (name -> kind, default) so a test can compare the settings with the
documentation (docs/deploy.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import environ

from webapp.site_security import SiteConfigError

# The method names below (str, int, ...) hide the builtins inside the class: its annotations use these names.
Str: TypeAlias = str
Int: TypeAlias = int
Float: TypeAlias = float
Bool: TypeAlias = bool
Strs: TypeAlias = list[str]
Ints: TypeAlias = list[int]
Settings: TypeAlias = dict[str, Any]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Read:
    """One variable the settings read: its kind (int, float, bool, str, list, path, url) and default."""

    kind: str
    default: Any


class Env:
    """Reads typed values from ``environ`` (default ``os.environ``); a bad value raises ``SiteConfigError``."""

    def __init__(self, environ_: Mapping[Str, Str] | None = None) -> None:
        self.environ = os.environ if environ_ is None else environ_
        self.read: dict[Str, Read] = {}

    def _raw(self, name: Str, kind: Str, default: Any) -> Str | None:
        self.read[name] = Read(kind, default)
        raw = self.environ.get(name)
        return None if raw is None or raw.strip() == "" else raw.strip()

    def is_set(self, name: Str) -> Bool:
        """True when ``name`` is set to something other than blanks (a blank value counts as unset)."""
        raw = self.environ.get(name)
        return raw is not None and raw.strip() != ""

    def str(self, name: Str, default: Str = "") -> Str:
        """The value as it is (surrounding blanks removed), or ``default``."""
        raw = self._raw(name, "str", default)
        return default if raw is None else raw

    def int(self, name: Str, default: Int, *, minimum: Int | None = None) -> Int:
        """A whole number, at least ``minimum`` when given."""
        raw = self._raw(name, "int", default)
        if raw is None:
            return default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise SiteConfigError(f"{name}={raw!r} is not an integer (e.g. {default})") from None
        return self._at_least(name, raw, value, minimum)

    def float(self, name: Str, default: Float, *, minimum: Float | None = None) -> Float:
        """A number (decimal point and exponent allowed), at least ``minimum`` when given."""
        raw = self._raw(name, "float", default)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SiteConfigError(f"{name}={raw!r} is not a number (e.g. {default})") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise SiteConfigError(f"{name}={raw!r} is not a finite number")
        return self._at_least(name, raw, value, minimum)

    @staticmethod
    def _at_least(name: Str, raw: Str, value: Any, minimum: Any) -> Any:
        if minimum is not None and value < minimum:
            raise SiteConfigError(f"{name}={raw!r} is below the smallest allowed value {minimum}")
        return value

    def bool(self, name: Str, default: Bool) -> Bool:
        """1/true/yes/on or 0/false/no/off (any case); anything else is refused rather than read as false."""
        raw = self._raw(name, "bool", default)
        if raw is None:
            return default
        word = raw.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise SiteConfigError(f"{name}={raw!r} is not a true/false value (use 1 or 0, true or false, yes or no, "
                              "on or off)")

    def list(self, name: Str, default: Str = "", *, sep: Str = ",") -> Strs:
        """Entries separated by ``sep`` (blanks around them and empty entries dropped)."""
        raw = self._raw(name, "list", default)
        text = default if raw is None else raw
        return [item.strip() for item in text.split(sep) if item.strip()]

    def int_list(self, name: Str, default: Str) -> Ints:
        """Whole numbers separated by commas, e.g. ``128,256``."""
        items = self.list(name, default)
        self.read[name] = Read("int list", default)
        try:
            return [int(v) for v in items]
        except ValueError:
            raise SiteConfigError(f"{name}={','.join(items)!r} is not a list of whole numbers separated by commas "
                                  "(e.g. 128,256)") from None

    def path(self, name: Str, default: Path) -> Path:
        """A folder or file path (``~`` expanded, made absolute)."""
        raw = self._raw(name, "path", default)
        return (default if raw is None else Path(raw).expanduser()).resolve()

    def email_url(self, name: Str) -> Settings:
        """``EMAIL_URL`` as Django's ``EMAIL_*`` settings (empty dict when unset), through django-environ.

        ``smtp://user:password@host:25``, ``smtp+tls://...:587`` (STARTTLS), ``smtps://`` or ``smtp+ssl://...:465``;
        a user or password with ``@``, ``:`` or ``/`` is percent-encoded (``%40``)."""
        raw = self._raw(name, "url", "")
        if raw is None:
            return {}
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if scheme not in environ.Env.EMAIL_SCHEMES:
            known = ", ".join(sorted(environ.Env.EMAIL_SCHEMES))
            raise SiteConfigError(f"{name}: scheme {scheme or '(none)'!r} is not a mail URL scheme; use one of "
                                  f"{known}, e.g. smtp+tls://user:password@mail.example.org:587")
        try:
            config = environ.Env.email_url_config(raw)
        except ValueError as exc:  # e.g. a port that is not a number
            raise SiteConfigError(f"{name}: cannot read the mail URL ({exc}); e.g. "
                                  "smtp+tls://user:password@mail.example.org:587") from None
        if config.get("EMAIL_BACKEND", "").endswith("smtp.EmailBackend") and not config.get("EMAIL_HOST"):
            raise SiteConfigError(f"{name}: the mail URL names no host, e.g. smtp://mail.example.org:25")
        return {k: v for k, v in config.items() if k != "OPTIONS" or v}
