"""The JSON HTTP API (``/api/v1/``); its token authentication is :mod:`webapp.accounts.auth`."""
