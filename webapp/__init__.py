"""ptychopy's Django project: job history, live view, JSON API and Dramatiq workers."""
