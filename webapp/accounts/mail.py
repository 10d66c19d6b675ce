"""Mail without a mail server: nothing is printed, and the password-reset flow is off.

Django's console backend writes each mail, body and all, to the server log: a password-reset mail's working
link would be readable by anyone who reads the log. With no ``EMAIL_HOST`` (and no ``EMAIL_BACKEND``) the site
uses :class:`SuppressedEmailBackend`, which logs only that a mail was not sent; and the reset view refuses
(:func:`password_reset_enabled`), because its mail could not reach anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

log = logging.getLogger(__name__)

SUPPRESSED = "webapp.accounts.mail.SuppressedEmailBackend"
# Backends that keep or print a mail on this host instead of delivering it: never for a password-reset mail.
NON_DELIVERING = frozenset({
    SUPPRESSED,
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
})


class SuppressedEmailBackend(BaseEmailBackend):
    """Sends nothing; logs one line per mail (its subject and how many recipients), never its body."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        for message in email_messages:
            log.warning("mail not sent (no mail server: set EMAIL_HOST, docs/deploy.md): %r to %d recipient(s)",
                        message.subject[:120], len(message.recipients()))
        return 0


def password_reset_enabled() -> bool:
    """Whether ``/accounts/password_reset/`` may send a reset link: a delivering backend and not switched off."""
    return bool(getattr(settings, "PTYCHOPY_PASSWORD_RESET", True)) and settings.EMAIL_BACKEND not in NON_DELIVERING
