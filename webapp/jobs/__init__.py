"""Reconstruction jobs: the model, the services that create and cancel them, the Dramatiq actor and the views."""
