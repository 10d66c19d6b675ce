# What a worker reports for /metrics with each heartbeat (issue 19: iterations/s, frames published, GPU memory).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0005_job_provenance'),
    ]

    operations = [
        migrations.AddField(
            model_name='workerheartbeat',
            name='stats',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
