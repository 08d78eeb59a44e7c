"""Data: the data set and its validation, the warehouse (tables, migrations, engine), what an
ingest stores, the training lineage and its lease, and reading what the warehouse holds."""
