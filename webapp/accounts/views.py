"""Password reset: the request page, refused while the site cannot deliver mail (see :mod:`.mail`), and the
page a reset mail's link opens, which keeps the token out of every URL a server sees."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import INTERNAL_RESET_SESSION_TOKEN, PasswordResetConfirmView, PasswordResetView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from .mail import password_reset_enabled


class GatedPasswordResetView(PasswordResetView):
    """Django's reset view when mail is delivered; otherwise a page saying it is off (GET 200, POST 403)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not password_reset_enabled():
            status = 200 if request.method in ("GET", "HEAD") else 403
            return render(request, "registration/password_reset_off.html", status=status)
        return super().dispatch(request, *args, **kwargs)


class ResetLinkView(View):
    """``/accounts/reset/<uidb64>/``: where a reset mail's link leads, with the token after ``#``.

    A browser never sends the part after ``#``, so the token is in no request line that Daphne or a proxy logs.
    The page's script (or the user, pasting the code from the mail) posts it here; it goes into the session as
    Django's own confirm view keeps it, and the browser continues to ``.../set-password/``.
    """

    def get(self, request: HttpRequest, uidb64: str) -> HttpResponse:
        return render(request, "registration/password_reset_link.html", {"uidb64": uidb64})

    def post(self, request: HttpRequest, uidb64: str) -> HttpResponse:
        token = request.POST.get("token", "").strip().lstrip("#")[:128]
        if not token:
            return render(request, "registration/password_reset_link.html",
                          {"uidb64": uidb64, "error": "Enter the code from the mail."}, status=400)
        request.session[INTERNAL_RESET_SESSION_TOKEN] = token
        return redirect("password_reset_confirm", uidb64=uidb64, token=PasswordResetConfirmView.reset_url_token)
