"""The third-party images the deployment runs, and pinning them by digest.

    python3 -m deploy.images list     # every reference, and whether it carries a digest
    python3 -m deploy.images pin      # append each tag's current digest (needs `docker buildx`)
    python3 -m deploy.images check    # exit 1 while a reference has no digest

A tag can be moved to other content; `name:tag@sha256:...` cannot (the registry verifies the
digest, and the tag stays beside it for people). The references sit where their tools read them:
the Dockerfiles' base images, compose's `image:`, the Kubernetes manifests' and k3d's node image.
Digests are never typed in: `pin` asks the registry (`docker buildx imagetools inspect`, the
multi-platform index digest) and writes what it answered; anyone can re-check a pin the same way.
Standard library only, like deploy.dotenv: it runs with the host's python3.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("docker/*.Dockerfile", "docker-compose.yaml", "k8s/base/*.yaml", "k3d/cluster.yaml")
# Where a reference stands: a Dockerfile ARG default or FROM, a YAML `image:` value.
PLACES = (
    re.compile(r"^(?P<lead>ARG \w+_IMAGE=)(?P<ref>\S+)$", re.MULTILINE),
    re.compile(r"^(?P<lead>FROM )(?P<ref>[^$\s]\S*)", re.MULTILINE),
    re.compile(r"^(?P<lead>\s*image: )(?P<ref>\S+)$", re.MULTILINE),
)
OWN_IMAGES = "readmission-"  # built from this repository (scripts/k8s-up, compose build)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    path: Path
    ref: str

    @property
    def pinned(self) -> bool:
        return "@sha256:" in self.ref


def references(root: Path = ROOT) -> list[Reference]:
    found = []
    for pattern in FILES:
        for path in sorted(root.glob(pattern)):
            text = path.read_text()
            for place in PLACES:
                for match in place.finditer(text):
                    ref = match["ref"]
                    if not ref.startswith(OWN_IMAGES) and "${" not in ref:
                        found.append(Reference(path, ref))
    return found


def registry_digest(ref: str) -> str:
    """The digest the registry serves for `ref` now (the index of every platform)."""
    result = subprocess.run(
        ["docker", "buildx", "imagetools", "inspect", ref, "--format", "{{json .Manifest}}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode:
        raise SystemExit(f"cannot resolve {ref}: {result.stderr.strip()}")
    return str(json.loads(result.stdout)["digest"])


def with_digest(text: str, ref: str, digest: str) -> str:
    """`text` with every place holding exactly `ref` holding `ref@digest`."""

    def pinned(match: re.Match[str]) -> str:
        return f"{match['lead']}{ref}@{digest}" if match["ref"] == ref else match[0]

    for place in PLACES:
        text = place.sub(pinned, text)
    return text


def pin(root: Path = ROOT, resolve: Callable[[str], str] = registry_digest) -> list[str]:
    """Append the current digest to every reference without one; returns them as pinned."""
    digests: dict[str, str] = {}
    pinned = []
    for reference in references(root):
        if reference.pinned:
            continue
        if reference.ref not in digests:
            answer = resolve(reference.ref)
            if not DIGEST.match(answer):
                raise SystemExit(f"{reference.ref}: the registry answered {answer!r}, no digest")
            digests[reference.ref] = answer
        reference.path.write_text(
            with_digest(reference.path.read_text(), reference.ref, digests[reference.ref])
        )
        pinned.append(f"{reference.ref}@{digests[reference.ref]}")
    return list(dict.fromkeys(pinned))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["list", "pin", "check"])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout (default: this one)")
    args = parser.parse_args(argv)
    if args.command == "pin":
        for line in pin(args.root):
            print(f"pinned {line}")
        return 0
    found = references(args.root)
    for reference in found:
        state = "pinned  " if reference.pinned else "TAG ONLY"
        print(f"{state} {reference.ref}  ({reference.path.relative_to(args.root)})")
    if args.command == "check" and (loose := [r for r in found if not r.pinned]):
        print(
            f"{len(loose)} image reference(s) without a digest: run `python3 -m deploy.images pin`"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
