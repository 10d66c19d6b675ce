from django.urls import path

from . import h5grove_views

app_name = "files"

# h5web's H5GroveProvider asks <url>/meta, /attr, /data and /paths (no trailing slash)
urlpatterns = [
    path("view/", h5grove_views.viewer, name="view"),
    path("h5grove/meta", h5grove_views.meta, name="meta"),
    path("h5grove/attr", h5grove_views.attr, name="attr"),
    path("h5grove/data", h5grove_views.data, name="data"),
    path("h5grove/paths", h5grove_views.paths, name="paths"),
]
