# Where each parameter of a job came from (issue 16: EPICS bridge jobs show PV / template / bridge per parameter).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0004_job_attempts_worker_losses_enqueued_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='provenance',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
