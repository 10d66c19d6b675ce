"""Who is alive: worker heartbeats, EPICS bridge status, and the dashboard that shows them with the queue."""
