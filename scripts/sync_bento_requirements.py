"""Write the Bento's Python requirements (bentofile.yaml ``python.packages``) from pyproject.toml.

pyproject.toml is the one dependency source: the Bento gets ``[project].dependencies`` (the serving set: no torch,
no training packages; those are the ``train`` extra) plus the ``extra`` of ``[tool.essayscore.bento]`` (and its
``exclude`` / ``pins``, if any).

    python scripts/sync_bento_requirements.py           # rewrite bentofile.yaml's package list
    python scripts/sync_bento_requirements.py --check   # exit 1 (and say what differs) when they drift apart
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^\s*([A-Za-z0-9_.-]+)")
_BLOCK = re.compile(r"(?m)^(  packages:\n)((?:    - .*\n)+)")


def package_name(requirement: str) -> str:
    return _NAME.match(requirement).group(1).lower().replace("_", "-")


def bento_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    data = tomllib.loads(pyproject.read_text())
    rules = data["tool"]["essayscore"]["bento"]
    exclude = {package_name(n) for n in rules.get("exclude", [])}
    pins = {package_name(k): v for k, v in rules.get("pins", {}).items()}
    out = []
    for requirement in data["project"]["dependencies"]:
        name = package_name(requirement)
        if name not in exclude:
            out.append(pins.get(name, requirement.split(";")[0].strip()))
    return out + list(rules.get("extra", []))


def current(bentofile: Path) -> list[str]:
    match = _BLOCK.search(bentofile.read_text())
    if match is None:
        raise SystemExit(f"{bentofile}: no 'python: packages:' list")
    return [line.strip()[2:].strip().strip('"') for line in match.group(2).splitlines()]


def write(bentofile: Path, packages: list[str]) -> None:
    block = "".join(f'    - "{p}"\n' for p in packages)
    bentofile.write_text(_BLOCK.sub(lambda m: m.group(1) + block, bentofile.read_text(), count=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bentofile", type=Path, default=REPO / "bentofile.yaml")
    args = ap.parse_args(argv)
    want, have = bento_requirements(), current(args.bentofile)
    if args.check:
        if want != have:
            print(f"{args.bentofile} is out of date with pyproject.toml: missing {sorted(set(want) - set(have))}, "
                  f"extra {sorted(set(have) - set(want))}; run python scripts/sync_bento_requirements.py",
                  file=sys.stderr)
            return 1
        return 0
    write(args.bentofile, want)
    print(f"{args.bentofile}: {len(want)} packages from pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
