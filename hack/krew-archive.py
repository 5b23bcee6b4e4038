#!/usr/bin/env python3
"""Build the krew archive of `kubectl proxmigrate` and keep the manifest's sha256 equal to it.

No release hosts the archive yet, so it is built here, byte for byte reproducible (sorted
members, fixed times and owners, gzip without a timestamp): the launcher as the plugin's `bin`
plus LICENSE and README.md, which krew's index requires. Install it with
  kubectl krew install --manifest=plugins/krew/proxmigrate.yaml \
    --archive=dist/kubectl-proxmigrate.tar.gz

usage: hack/krew-archive.py [OUT]      build OUT (dist/kubectl-proxmigrate.tar.gz), print sha256
       hack/krew-archive.py --update   also write that sha256 into the manifest
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "plugins" / "krew" / "proxmigrate.yaml"
DEFAULT_OUT = ROOT / "dist" / "kubectl-proxmigrate.tar.gz"
# archive member: (source, mode)
MEMBERS = {
    "kubectl-proxmigrate": (ROOT / "plugins" / "krew" / "kubectl-proxmigrate", 0o755),
    "LICENSE": (ROOT / "LICENSE", 0o644),
    "README.md": (ROOT / "plugins" / "krew" / "README.md", 0o644),
}


def archive_bytes() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (source, mode) in sorted(MEMBERS.items()):
            data = source.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def build(out: Path) -> str:
    """Write the archive to `out`; its sha256."""
    data = archive_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str]) -> int:
    update = "--update" in argv
    paths = [a for a in argv if a != "--update"]
    if len(paths) > 1 or any(a.startswith("-") for a in paths):
        print(__doc__.split("usage:")[1].strip(), file=sys.stderr)
        return 2
    out = Path(paths[0]) if paths else DEFAULT_OUT
    digest = build(out)
    print(f"{out}  sha256 {digest}")
    if update:
        text = MANIFEST.read_text()
        MANIFEST.write_text(re.sub(r"sha256: \S+", f"sha256: {digest}", text))
        print(f"{MANIFEST.relative_to(ROOT)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
