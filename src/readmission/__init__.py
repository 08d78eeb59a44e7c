"""Diabetes readmission platform: the domain core shared by the DAGs, the API, the UI and Locust."""

__version__ = "0.1.0"
