"""Who is asking: API token authentication and websocket tickets, the page where users manage their tokens,
logging in safely (login throttling with django-axes, the client's address behind trusted proxies) and the
password-reset flow with its mail (never logged). See docs/deploy.md "Logins, mail and password reset"."""
