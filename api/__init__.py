"""The serving API: the production model of the registry behind a small REST interface."""
