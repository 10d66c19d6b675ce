"""A real OpenID Connect provider for the single sign-on tests: a small Django site running django-oidc-provider
(authorization-code flow, RS256 ID tokens, JWKS, userinfo) in its own process with its own SQLite users.
``tests.support.oidc.OidcProvider`` sets it up and runs it."""
