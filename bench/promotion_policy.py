"""What the promotion gate sees on the real file: consecutive warm-started versions judged.

Cuts the first `--first` share of the real data set by `encounter_id`, ingests it with
BATCH_SIZE=10000 on the embedded default in a fresh folder, then trains one batch at a time and
runs `readmission evaluate --auto-promote` after each version, exactly as an operator would,
under PROMOTION_POLICY (and NON_INFERIORITY_MARGIN) from the environment. Prints each verdict
line, then `readmission promotions --json` and `readmission status`.

    PROMOTION_POLICY=superior .venv/bin/python bench/promotion_policy.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from local_platform import use_local_platform

BIN = Path(sys.executable).parent


def readmission(*args: str) -> str:
    done = subprocess.run(
        [str(BIN / "readmission"), *args], capture_output=True, text=True, env=os.environ.copy()
    )
    if done.returncode != 0:
        raise SystemExit(f"readmission {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/dataset_diabetes.zip")
    parser.add_argument("--first", type=float, default=0.5, help="share of the file ingested")
    args = parser.parse_args()
    home = use_local_platform(args.source, "bench-promotion-", BATCH_SIZE="10000")

    from readmission.data.dataset import load

    frame = load(os.environ["DATA_SOURCE"])
    extract = home / "first.csv"
    frame.iloc[: int(len(frame) * args.first)].to_csv(extract, index=False)
    print(
        f"policy {os.environ.get('PROMOTION_POLICY', 'default')}, "
        f"margin {os.environ.get('NON_INFERIORITY_MARGIN', 'default')}",
        flush=True,
    )
    print(readmission("ingest", "--source", str(extract)).splitlines()[-1], flush=True)
    while True:
        trained = readmission("train", "--batches", "1")
        if trained.startswith("nothing to train"):
            break
        print(trained.strip().splitlines()[-1].strip(), flush=True)
        print("  " + readmission("evaluate", "--auto-promote").strip(), flush=True)
    print(readmission("promotions", "--json"))
    print(readmission("status"))
    print(f"home: {home}")


if __name__ == "__main__":
    main()
