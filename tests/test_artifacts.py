
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
