"""Check what an unpacked essayscore image holds (scripts/build_image.sh, smoke step, on `buildah mount`'s folder).

    python scripts/image/inspect_image.py ROOTFS --host-ca /etc/ssl/certs/ca-certificates.crt [--env-json JSON]

Prints, and exits 1 when a check fails:

* ``CA_CHECK=PASS|FAIL ...``: the build host's CA bundle is not in the image. The certificates of the host bundle
  that the image's ca-certificates package does not ship (``/usr/share/ca-certificates``: the intercepting proxy's
  CA) are searched for, as PEM text and as DER bytes, in every file of the image; the image config's
  environment must not point ``SSL_CERT_FILE`` / ``PIP_CERT`` / ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` anywhere.
* ``IMAGE_CONTENT=PASS|FAIL torch=... compilers=... uv=...``: no torch (nor CUDA libraries), no C compiler or make, no
  uv left behind.
* ``IMAGE_DU ...`` and ``IMAGE_PACKAGES ...``: sizes of the main folders and the largest installed packages.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from pathlib import Path

PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)\s+-----END CERTIFICATE-----", re.S)
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "UV_NATIVE_TLS")
COMPILERS = ("gcc", "cc", "c++", "g++", "x86_64-linux-gnu-gcc", "aarch64-linux-gnu-gcc", "make", "ld")
MAX_SCAN_BYTES = 256 << 20


def certificates(bundle: bytes) -> dict[bytes, bytes]:
    """DER bytes -> one line of its base64 (as PEM writes it) for every certificate of a PEM bundle."""
    out = {}
    for body in PEM.findall(bundle):
        text = b"".join(body.split())
        out[base64.b64decode(text)] = text[64:128] or text[:64]  # a 64-char line from the middle: unique enough
    return out


def files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (dirpath == str(root) and d in ("proc", "sys", "dev"))]
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                yield path


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in files(path)) if path.is_dir() else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("rootfs", type=Path)
    ap.add_argument("--host-ca", type=Path, required=True)
    ap.add_argument("--env-json", default="[]", help="the image config's Env list, as JSON")
    args = ap.parse_args()
    root = args.rootfs
    ok = True

    # ---- the build host's CA
    host = certificates(args.host_ca.read_bytes())
    own: dict[bytes, bytes] = {}  # what Debian's ca-certificates package ships (the image's bundle is built from it)
    for cert in sorted((root / "usr/share/ca-certificates").glob("**/*.crt")):
        own.update(certificates(cert.read_bytes()))
    foreign = {der: line for der, line in host.items() if der not in own}
    found: list[str] = []
    if foreign:
        needles = [*foreign.values(), *(der[:64] for der in foreign)]
        for path in files(root):
            if path.stat().st_size > MAX_SCAN_BYTES:
                continue
            data = path.read_bytes()
            if any(n in data for n in needles):
                found.append("/" + str(path.relative_to(root)))
    env = [e for e in json.loads(args.env_json) if e.split("=", 1)[0] in CA_VARIABLES]
    if found or env:
        ok = False
        print(f"CA_CHECK=FAIL host-only certificates found in {found[:10]}; CA variables in the image env: {env}")
    else:
        print(f"CA_CHECK=PASS the {len(foreign)} certificate(s) of {args.host_ca} that the image's own bundle lacks "
              f"(its proxy CA) are in no file of the image ({len(host)} in the host bundle, {len(own)} shipped by the "
              "image's ca-certificates); no CA variable in the image env")

    # ---- torch, compilers, uv
    torch = sorted("/" + str(p.relative_to(root)) for p in root.glob("**/site-packages/torch") if p.is_dir())
    cuda = sorted("/" + str(p.relative_to(root)) for p in root.glob("**/site-packages/nvidia") if p.is_dir())
    bins = [root / d for d in ("usr/bin", "usr/local/bin", "bin", "app/.venv/bin")]
    compilers = sorted(f"/{b.relative_to(root)}/{c}" for b in bins for c in COMPILERS if (b / c).exists())
    uv = sorted(f"/{b.relative_to(root)}/uv" for b in bins if (b / "uv").exists())
    content_ok = not (torch or cuda or compilers or uv)
    ok &= content_ok
    print(f"IMAGE_CONTENT={'PASS' if content_ok else 'FAIL'} torch={torch or 'absent'} cuda={cuda or 'absent'} "
          f"compilers={compilers or 'absent'} uv={uv or 'absent'}")

    # ---- sizes
    mb = lambda n: f"{n / 1e6:.0f}MB"
    tops = {d: du(root / d) for d in ("app/.venv", "home/bentoml/bento", "usr", "var", "etc")}
    print("IMAGE_DU " + " ".join(f"/{d}={mb(n)}" for d, n in tops.items()) + f" total={mb(du(root))}")
    site = next(iter(sorted(root.glob("app/.venv/lib/python*/site-packages"))), None)
    if site is not None:
        sizes = sorted(((du(p) if p.is_dir() else p.stat().st_size, p.name) for p in site.iterdir()), reverse=True)
        print("IMAGE_PACKAGES " + " ".join(f"{name}={mb(n)}" for n, name in sizes[:15]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
