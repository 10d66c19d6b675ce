"""``/accounts/tokens/``: a logged-in user makes and revokes their own API tokens. A new token's key is shown on
the answer to the form that made it, once; the list shows each token's first characters only."""

from __future__ import annotations

import datetime

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from webapp.api.models import ApiToken
from webapp.text_numbers import whole_number

#: the longest expiry the form offers, in days (a longer-lived token: manage.py create_token)
MAX_EXPIRY_DAYS = 3650
NAME_CHARS = ApiToken._meta.get_field("name").max_length


def _expiry(raw: str) -> datetime.datetime | None:
    """The expiry time for the form's 'expires_days' ('' or a whole number of days); ValueError saying why not."""
    raw = raw.strip()
    if not raw:
        return None
    days = whole_number(raw)
    if days is None or not 1 <= days <= MAX_EXPIRY_DAYS:
        raise ValueError(f"'Expires after' must be a whole number of days from 1 to {MAX_EXPIRY_DAYS}, "
                         f"not {raw[:20]!r}; leave it empty for a token that does not expire")
    return timezone.now() + datetime.timedelta(days=days)


@require_http_methods(["GET", "POST"])
@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    """GET: the user's tokens. POST (name, expires_days): make one and show its key this once."""
    context: dict = {"max_days": MAX_EXPIRY_DAYS, "name_chars": NAME_CHARS}
    status = 200
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        try:
            if len(name) > NAME_CHARS:
                raise ValueError(f"'Name' may have at most {NAME_CHARS} characters, not {len(name)}")
            expires = _expiry(request.POST.get("expires_days", ""))
        except ValueError as exc:
            context.update(error=str(exc), name=name[:NAME_CHARS])
            status = 400
        else:
            context["new_token"] = ApiToken.objects.create(user=request.user, name=name, expires=expires)
    context["tokens"] = ApiToken.objects.filter(user=request.user)
    context["now"] = timezone.now()
    response = render(request, "accounts/tokens.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the page may carry a new key
    return response


@require_POST
@login_required
def revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Delete one of the user's own tokens (another user's is 404: its existence is not told)."""
    deleted, _ = ApiToken.objects.filter(pk=token_id, user=request.user).delete()
    if not deleted:
        raise Http404(f"you have no API token number {token_id}")
    return redirect("tokens")
