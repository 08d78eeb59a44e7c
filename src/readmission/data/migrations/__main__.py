"""python -m readmission.data.migrations revision "what changes": a new revision
(docs/migrations.md)."""

import sys

from readmission.data.migrations import revision

if len(sys.argv) != 3 or sys.argv[1] != "revision":
    raise SystemExit('usage: python -m readmission.data.migrations revision "what changes"')
revision(sys.argv[2])
