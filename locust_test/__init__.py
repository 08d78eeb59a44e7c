"""Load test of the serving API: the users live in `locustfile.py`."""
