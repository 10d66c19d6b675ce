"""``manage.py create_token <user> [--name NAME] [--expires-days N] [--bridge]``: print a new API token's key.

The key is printed once and stored only as a digest: a lost key is replaced by a new token, not looked up.

With ``--bridge`` the user gets the permission an EPICS bridge needs (submit jobs with source 'epics', report the
bridge's status) and is created when missing, without a usable password: it can use its token and nothing else.
"""

import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from webapp.api.models import BRIDGE_PERMISSION, ApiToken


class Command(BaseCommand):
    help = "Create an API token for a user and print its key (and nothing else)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument("--expires-days", type=float, default=None, metavar="N",
                            help="refuse the token N days from now (default: it never expires)")
        parser.add_argument("--bridge", action="store_true",
                            help="a token for an EPICS bridge: grant the user the bridge permission, creating "
                                 "the user (no password, no web login) when it does not exist")

    def handle(self, username, name, bridge=False, expires_days=None, **options):
        if expires_days is not None and not expires_days > 0:
            raise CommandError(f"--expires-days must be a positive number of days, not {expires_days}")
        users = get_user_model()
        user = users.objects.filter(username=username).first()
        if user is None and not bridge:
            raise CommandError(f"no user named {username!r} (give --bridge to create a bridge user)")
        if user is None:
            user = users(username=username)
            user.set_unusable_password()
            user.save()
        if bridge:
            app_label, codename = BRIDGE_PERMISSION.split(".")
            user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        expires = None if expires_days is None else timezone.now() + datetime.timedelta(days=expires_days)
        token = ApiToken.objects.create(user=user, name=name, expires=expires)
        self.stdout.write(token.key)
