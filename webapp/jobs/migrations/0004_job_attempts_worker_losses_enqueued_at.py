# Claim bookkeeping for the reconciler (issue 15): attempt counter, worker losses, last enqueue time.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0003_job_run_plan'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='attempts',
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name='job',
            name='worker_losses',
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name='job',
            name='enqueued_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
