"""`python -m readmission`: the same command line as `readmission`."""

from readmission.cli import app

app(prog_name="readmission")
