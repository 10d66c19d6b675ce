from django.urls import path

from . import views

app_name = "api"

urlpatterns = [
    path("jobs/", views.jobs, name="jobs"),
    path("jobs/<int:job_id>/", views.job, name="job"),
    path("jobs/<int:job_id>/cancel/", views.cancel, name="cancel"),
    path("jobs/<int:job_id>/ws-ticket/", views.ws_ticket, name="ws_ticket"),
    path("bridges/status/", views.bridge_status, name="bridge_status"),
    path("openapi.json", views.openapi, name="openapi"),
]
