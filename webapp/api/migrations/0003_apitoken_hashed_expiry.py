# ruff: noqa: E501
"""API tokens hashed at rest: each stored key becomes its SHA-256 digest and first characters (the same key keeps
working), the key column goes; tokens may expire."""

import hashlib

from django.db import migrations, models

PREFIX_CHARS = 8  # webapp.api.models.PREFIX_CHARS when this was written


def hash_keys(apps, schema_editor):
    tokens = apps.get_model("api", "ApiToken")
    for token in tokens.objects.all().only("pk", "key"):
        tokens.objects.filter(pk=token.pk).update(digest=hashlib.sha256(token.key.encode("utf-8")).hexdigest(),
                                                  prefix=token.key[:PREFIX_CHARS])


def cannot_unhash(apps, schema_editor):
    if apps.get_model("api", "ApiToken").objects.exists():
        raise RuntimeError("API tokens are stored hashed since api 0003 and their keys cannot be recovered: "
                           "delete the tokens (or the rows of api_apitoken) before migrating back")


class Migration(migrations.Migration):

    dependencies = [
        ('api', '0002_idempotency_key_bridge_permission'),
    ]

    operations = [
        migrations.AddField(
            model_name='apitoken',
            name='digest',
            field=models.CharField(editable=False, help_text='SHA-256 of the key (hex).', max_length=64, null=True),
        ),
        migrations.AddField(
            model_name='apitoken',
            name='prefix',
            field=models.CharField(db_index=True, default='', editable=False, help_text='The key\'s first characters, to recognise it (not enough to use it).', max_length=8),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='apitoken',
            name='expires',
            field=models.DateTimeField(blank=True, help_text='Refused from this time on; empty: never.', null=True),
        ),
        migrations.AlterField(
            model_name='apitoken',
            name='last_used',
            field=models.DateTimeField(blank=True, help_text='To the minute.', null=True),
        ),
        migrations.RunPython(hash_keys, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='apitoken',
            name='key',
        ),
        migrations.AlterField(
            model_name='apitoken',
            name='digest',
            field=models.CharField(editable=False, help_text='SHA-256 of the key (hex).', max_length=64, unique=True),
        ),
        # backwards, this runs first: refuse before the key column comes back
        migrations.RunPython(migrations.RunPython.noop, cannot_unhash),
    ]
