"""The champion pointer: which model version serving loads by default.

``essayscore:latest`` is only the newest model saved; a retrain must not become what the service loads until the
retraining gate (``training/gate.py``) has compared it with the champion. The pointer is one JSON file beside the
artifacts (``<artifacts_dir>/champion.json``):

    {"current": {"version", "manifest_sha256", "promoted_at", "reason"}, "history": [earlier entries, newest last]}

* ``manifest_sha256`` pins the artifact's content: the manifest lists every file's hash, and opening the artifact
  verifies them, so a pointer to an altered artifact (a file or the manifest changed) is refused.
* Moving it is atomic (a temporary file, fsync, ``os.replace``), so a reader sees the old pointer or the new one.
* ``history`` keeps the earlier champions (their artifacts stay on disk) for ``essayscore rollback``.

A built Bento carries exactly one model and no artifacts folder: there ``champion`` resolves to that model
(``essayscore.artifacts.resolve``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from essayscore.artifacts import MANIFEST, ArtifactError

POINTER = "champion.json"
REFERENCE = "champion"


class ChampionError(ArtifactError):
    """No champion, or a pointer that does not match its artifact."""


@dataclass(frozen=True)
class Entry:
    version: str
    manifest_sha256: str
    promoted_at: str
    reason: str


def manifest_sha256(artifact_dir: Path) -> str:
    return hashlib.sha256((Path(artifact_dir) / MANIFEST).read_bytes()).hexdigest()


def pointer_path(artifacts_dir: Path) -> Path:
    return Path(artifacts_dir) / POINTER


def read(artifacts_dir: Path) -> tuple[Entry | None, list[Entry]]:
    """(current, history); (None, []) when there is no pointer yet."""
    path = pointer_path(artifacts_dir)
    if not path.is_file():
        return None, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        current = Entry(**data["current"]) if data.get("current") else None
        history = [Entry(**e) for e in data.get("history", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise ChampionError(f"{path}: not a champion pointer ({type(exc).__name__}: {exc})") from exc
    return current, history


def _write(artifacts_dir: Path, current: Entry, history: list[Entry]) -> None:
    path = pointer_path(artifacts_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"current": asdict(current), "history": [asdict(e) for e in history]}, indent=2)
    fd, tmp = tempfile.mkstemp(prefix=".champion-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic: readers see the old pointer or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verified_dir(entry: Entry, artifacts_dir: Path) -> Path:
    """The champion's artifact folder, after checking it exists and is the artifact that was promoted."""
    from essayscore.artifacts import Artifact, resolve

    try:
        folder = resolve(entry.version, artifacts_dir)
    except ArtifactError as exc:
        raise ChampionError(f"the champion pointer ({pointer_path(artifacts_dir)}) names {entry.version}, which is "
                            f"missing: {exc}. Promote an existing version (essayscore promote TAG) or roll back "
                            "(essayscore rollback)") from exc
    actual = manifest_sha256(folder)
    if actual != entry.manifest_sha256:
        raise ChampionError(f"the champion pointer names {entry.version} with manifest sha256 "
                            f"{entry.manifest_sha256[:12]}…, but {folder} has {actual[:12]}…: the artifact was "
                            "altered or replaced since it was promoted; refusing to serve it")
    try:
        Artifact(folder)  # verifies every file's hash against the manifest
    except ArtifactError as exc:
        raise ChampionError(f"the champion {entry.version} fails its own checks: {exc}") from exc
    return folder


def current_dir(artifacts_dir: Path) -> Path:
    current, _ = read(artifacts_dir)
    if current is None:
        raise ChampionError(f"no champion yet ({pointer_path(artifacts_dir)} does not exist): promote a model with "
                            "`essayscore promote TAG` (or `essayscore promote latest`)")
    return verified_dir(current, artifacts_dir)


def promote(artifact_dir: Path, artifacts_dir: Path, reason: str) -> Entry:
    """Makes ``artifact_dir`` the champion; the previous champion goes to the history (kept for rollback)."""
    from essayscore.artifacts import Artifact

    artifact = Artifact(Path(artifact_dir))  # refuses a broken artifact before it can become the champion
    entry = Entry(artifact.version, manifest_sha256(artifact.dir), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  reason)
    current, history = read(artifacts_dir)
    if current is not None and current.version != entry.version:
        history = [*history, current]
    _write(artifacts_dir, entry, history)
    return entry


def rollback(artifacts_dir: Path) -> Entry:
    """Makes the previous champion current again (checked first); the rolled-back one leaves the history."""
    current, history = read(artifacts_dir)
    if current is None or not history:
        raise ChampionError("nothing to roll back to: " + ("no champion yet" if current is None else
                                                            f"{current.version} is the only champion so far"))
    previous = history[-1]
    verified_dir(previous, artifacts_dir)
    restored = Entry(previous.version, previous.manifest_sha256,
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), f"rollback from {current.version}")
    _write(artifacts_dir, restored, history[:-1])
    return restored
