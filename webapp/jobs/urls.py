from django.urls import path

from . import views

app_name = "jobs"

urlpatterns = [
    path("", views.history, name="history"),
    path("jobs/new/", views.new_job, name="new"),
    path("jobs/compare/", views.compare, name="compare"),
    path("jobs/<int:job_id>/", views.detail, name="detail"),
    path("jobs/<int:job_id>/cancel/", views.cancel, name="cancel"),
    path("jobs/<int:job_id>/delete/", views.delete, name="delete"),
    path("jobs/<int:job_id>/clone/", views.clone, name="clone"),
    path("jobs/<int:job_id>/half-set/", views.half_set, name="half_set"),
    path("jobs/<int:job_id>/download/<str:fmt>/", views.download, name="download"),
    path("jobs/<int:job_id>/diffraction/", views.diffraction, name="diffraction"),
    path("jobs/<int:job_id>/snapshots/", views.snapshots, name="snapshots"),
    path("jobs/<int:job_id>/snapshots/<int:iteration>/", views.snapshot, name="snapshot"),
    path("jobs/<int:job_id>/compare-iterations/", views.compare_iterations, name="compare_iterations"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/bridges/<int:bridge_id>/retire/", views.retire_bridge, name="retire_bridge"),
]
