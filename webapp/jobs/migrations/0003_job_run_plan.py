from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0002_bridge_status'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='run_plan',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
