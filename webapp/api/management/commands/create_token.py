"""``manage.py create_token <user> [--name NAME]``: print a new API token for a user."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.api.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for a user and print its key."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for")

    def handle(self, username, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        token = ApiToken.objects.create(user=user, name=name)
        self.stdout.write(token.key)
