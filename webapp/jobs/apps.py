from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "webapp.jobs"
    label = "jobs"
    verbose_name = "Reconstruction jobs"
    default_auto_field = "django.db.models.BigAutoField"
