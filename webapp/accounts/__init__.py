"""Logging in safely: login throttling (django-axes), the client's address behind trusted proxies, and the
password-reset flow with its mail (never logged). See docs/deploy.md "Logins, mail and password reset"."""
