"""Static files: content-hashed names and precompressed copies after ``collectstatic``, plain names before it.

``collectstatic`` (the web image runs it; docs/deploy.md) writes each file under a name that carries its content
hash (``plotly-cartesian-2.min.<hash>.js``), a gzip copy beside it (and brotli when the ``brotli`` package is
installed), and ``staticfiles.json``; pages then link the hashed names, which WhiteNoise serves with a
cache lifetime of ten years (a changed file gets a new name). Without ``collectstatic`` (the embedded mode, the
tests) a page links the plain name, which WhiteNoise serves from the source folders with a 60 s lifetime.
"""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class HashedWhenCollected(CompressedManifestStaticFilesStorage):
    """WhiteNoise's compressed manifest storage, falling back to the plain name for a file ``collectstatic`` has
    not written (no manifest entry and no copy in ``STATIC_ROOT``)."""

    def stored_name(self, name: str) -> str:
        try:
            return super().stored_name(name)
        except ValueError:  # not collected: WhiteNoise's finders serve it under its own name
            return name
