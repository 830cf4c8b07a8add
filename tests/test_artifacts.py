"""Artifacts: manifest hashes, the model store, and the feature-registry check every runtime makes at load."""

import json

import pytest

from essayscore import artifacts


def _make(tmp_path, version="v20260101-000000"):
    d = tmp_path / version
    (d / "sub").mkdir(parents=True)
    (d / "model.json").write_text('{"trees": 1}')
    (d / "sub" / "stats.json").write_text("{}")
    artifacts.write_manifest(d, version, {"encoder": "minilm", "metrics": {"test": {"qwk": 0.5}}})
    return d


def test_manifest_lists_hashes_and_library_versions(tmp_path):
    d = _make(tmp_path)
    manifest = artifacts.verify(d)
    assert set(manifest["files"]) == {"model.json", "sub/stats.json"}
    assert manifest["files"]["model.json"] == artifacts.sha256_file(d / "model.json")
    assert "numpy" in manifest["libraries"] and "python" in manifest["libraries"]


@pytest.mark.parametrize("tamper,problem", [
    (lambda d: (d / "model.json").write_text('{"trees": 2}'), "sha256 mismatch in model.json"),
    (lambda d: (d / "sub" / "stats.json").unlink(), "missing sub/stats.json"),
    (lambda d: (d / "extra.bin").write_bytes(b"x"), "unexpected extra.bin"),
    (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
])
def test_loading_refuses_an_altered_artifact(tmp_path, tamper, problem):
    d = _make(tmp_path)
    tamper(d)
    with pytest.raises(artifacts.ArtifactError, match=problem):
        artifacts.verify(d)


def test_register_in_bentoml_store_and_resolve_by_tag(tmp_path):
    d = _make(tmp_path, "v20260102-000000")
    tag = artifacts.register(d)
    assert tag == "essayscore:v20260102-000000"
    stored = artifacts.resolve(tag)
    assert stored != d and artifacts.verify(stored)["version"] == "v20260102-000000"
    assert artifacts.register(d) == tag  # idempotent
    # local folders: by path, by version name, and "latest" = newest version
    newer = _make(tmp_path, "v20260103-000000")
    assert artifacts.resolve("latest", tmp_path) == newer
    assert artifacts.resolve("v20260102-000000", tmp_path) == d
    with pytest.raises(artifacts.ArtifactError, match="no artifact"):
        artifacts.resolve("essayscore:v19990101-000000", tmp_path / "nowhere")


def _with_registry(tmp_path, registry):
    d = tmp_path / "v20260104-000000"
    d.mkdir()
    (d / artifacts.Layout.REGISTRY).write_text(json.dumps(registry))
    artifacts.write_manifest(d, d.name)
    return d


def test_artifact_opens_with_this_codes_registry(tmp_path):
    a = artifacts.Artifact(_with_registry(tmp_path, artifacts.code_registry()))
    assert a.version == "v20260104-000000" and a.registry == artifacts.code_registry()


@pytest.mark.parametrize("change", ["swap two features", "rename one", "drop the last"])
def test_artifact_refuses_a_registry_that_is_not_this_codes(tmp_path, change):
    registry = artifacts.code_registry()
    if change == "swap two features":
        registry[3], registry[4] = registry[4], registry[3]
    elif change == "rename one":
        registry[10] = {**registry[10], "name": registry[10]["name"] + "_v2"}
    else:
        registry = registry[:-1]
    with pytest.raises(artifacts.ArtifactError, match="feature registry differs from this code's"):
        artifacts.Artifact(_with_registry(tmp_path, registry))


def _reordered_copy(trained_artifact, tmp_path):
    """A real artifact whose registry lists two features the other way round (hashes re-written, so only the
    registry check can catch it)."""
    import shutil

    copy = tmp_path / "reordered"
    shutil.copytree(trained_artifact, copy)
    registry = json.loads((copy / artifacts.Layout.REGISTRY).read_text())
    registry[0], registry[1] = registry[1], registry[0]
    (copy / artifacts.Layout.REGISTRY).write_text(json.dumps(registry))
    artifacts.write_manifest(copy, artifacts.verify(trained_artifact)["version"])
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["embedded", "triton"])
def test_every_runtime_refuses_a_reordered_registry_at_load(trained_artifact, tmp_path, runtime):
    from essayscore.runtimes import load_runtime

    copy = _reordered_copy(trained_artifact, tmp_path)
    with pytest.raises(artifacts.ArtifactError, match="feature registry differs"):
        load_runtime(runtime, copy)


@pytest.mark.slow
def test_the_triton_steps_refuse_a_reordered_registry_at_load(trained_artifact, tmp_path):
    from essayscore.triton_models.steps import AssembleStep, PostprocessStep

    copy = artifacts.Artifact(trained_artifact).copy_subset(tmp_path / "subset", artifacts.Layout.SCORING_FILES)
    PostprocessStep(copy, "v")  # the untouched subset loads
    registry = json.loads((copy / artifacts.Layout.REGISTRY).read_text())
    (copy / artifacts.Layout.REGISTRY).write_text(json.dumps(registry[::-1]))
    artifacts.write_manifest(copy, "v")
    for step in (lambda: AssembleStep(copy), lambda: PostprocessStep(copy, "v")):
        with pytest.raises(artifacts.ArtifactError, match="feature registry differs"):
            step()


# ---------------------------------------------------------------------------------------------------------------
# Model references (--model, ESSAYSCORE_MODEL_TAG) stay inside the artifacts folder and the BentoML model store
# ---------------------------------------------------------------------------------------------------------------
def test_a_folder_outside_the_artifacts_folder_and_the_store_is_refused(tmp_path):
    root = tmp_path / "artifacts"
    root.mkdir()
    outside = _make(tmp_path / "elsewhere")
    for reference in (outside, str(outside), f"{root}/../elsewhere/{outside.name}"):
        with pytest.raises(artifacts.ArtifactError, match="outside the allowed roots") as refused:
            artifacts.resolve(reference, root)
        assert str(root.resolve()) in str(refused.value)
        assert str(artifacts.model_store_dir().resolve()) in str(refused.value)
    with pytest.raises(artifacts.ArtifactError, match="outside the allowed roots"):
        artifacts.Artifact.open(str(outside), root)
    with pytest.raises(artifacts.ArtifactError, match="outside the allowed roots"):  # default: the settings' folder
        artifacts.resolve(str(outside))


def test_a_symlink_in_the_artifacts_folder_pointing_outside_is_refused(tmp_path):
    root = tmp_path / "artifacts"
    root.mkdir()
    outside = _make(tmp_path / "elsewhere", "v20260105-000000")
    (root / outside.name).symlink_to(outside, target_is_directory=True)
    for reference in (str(root / outside.name), outside.name, "latest", f"essayscore:{outside.name}"):
        with pytest.raises(artifacts.ArtifactError, match="outside the allowed roots"):
            artifacts.resolve(reference, root)


def test_versions_latest_store_tags_and_folders_inside_the_roots_still_resolve(tmp_path):
    root = tmp_path / "artifacts"
    older, newer = _make(root, "v20260106-000000"), _make(root, "v20260107-000000")
    assert artifacts.resolve("latest", root) == newer
    assert artifacts.resolve(older.name, root) == older
    assert artifacts.resolve(f"essayscore:{older.name}", root) == older
    assert artifacts.resolve(str(older), root) == older and artifacts.resolve(older, root) == older
    (root / "alias").symlink_to(older, target_is_directory=True)  # a link that stays inside is fine
    assert artifacts.resolve(str(root / "alias"), root) == root / "alias"
    tag = artifacts.register(older)
    stored = artifacts.resolve(tag, tmp_path / "nowhere")  # the store, by tag
    assert artifacts.verify(stored)["version"] == older.name
    assert artifacts.resolve(str(stored), tmp_path / "nowhere") == stored  # the store's own folder, by path


def test_cli_refuses_a_model_folder_outside_the_roots_clearly(tmp_path):
    import os
    import subprocess
    import sys

    outside = _make(tmp_path / "elsewhere")
    done = subprocess.run([sys.executable, "-m", "essayscore.cli", "info", "--model", str(outside)],
                          capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 2 and "outside the allowed roots" in done.stderr and "Traceback" not in done.stderr
