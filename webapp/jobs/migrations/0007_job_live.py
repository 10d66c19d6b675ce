# A streaming job's stream: frames planned/received/dropped, outcome, partial (issue 21, docs/streaming.md).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0006_workerheartbeat_stats'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='live',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
