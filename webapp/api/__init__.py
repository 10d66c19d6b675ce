"""The JSON HTTP API (``/api/v1/``) with per-user token authentication."""
