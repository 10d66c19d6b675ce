"""Scans on disk: the data roots user paths are confined to, the scan list and the form's defaults from a scan."""
