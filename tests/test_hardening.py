"""Hardening: /metadata names no host path; the container image runs as a non-root user.

(Model references outside the artifacts folder and the model store: tests/test_artifacts.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOT_USERS = ("", "root", "0")


# ---------------------------------------------------------------------------------------------------------------
# /metadata
# ---------------------------------------------------------------------------------------------------------------
def _strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.slow  # starts the session's Bento (trains the session's model)
def test_metadata_names_no_host_path(client, trained_artifact):
    import os

    from essayscore.settings import get_settings

    response = client.get("/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == trained_artifact.name and body["encoder"]["name"]
    text = json.dumps(body)
    host = {"/work", "/tmp", "/home", "/root", str(Path.home()), str(REPO), str(REPO.parent),
            str(trained_artifact), str(trained_artifact.parent), str(get_settings().artifacts_dir),
            str(get_settings().cache_dir), os.environ["BENTOML_HOME"]}
    leaks = sorted(h for h in host if h in text)
    assert not leaks, f"/metadata names host paths: {leaks}"
    absolute = [s for s in _strings(body) if s.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", s)]
    assert not absolute, f"/metadata holds path-like values: {absolute[:5]}"


# ---------------------------------------------------------------------------------------------------------------
# The image's user
# ---------------------------------------------------------------------------------------------------------------
def _final_user(dockerfile: str) -> str:
    users = re.findall(r"^USER\s+(\S+)\s*$", dockerfile, re.M)
    assert users, "the Dockerfile sets no USER (it would run as root)"
    return users[-1]


def _non_root(user: str, dockerfile: str) -> None:
    assert user.split(":")[0] not in ROOT_USERS, f"the image runs as {user!r}"
    uid = re.search(r"^ARG BENTO_USER_UID=(\d+)", dockerfile, re.M)
    assert uid and int(uid.group(1)) != 0, "the Bento user is uid 0"
    assert re.search(r"useradd .*-u \$BENTO_USER_UID", dockerfile), "the Bento user is not created"


@pytest.fixture(scope="module")
def build_config():
    from bentoml._internal.bento.build_config import BentoBuildConfig

    with open(REPO / "bentofile.yaml") as handle:
        return BentoBuildConfig.from_yaml(handle).with_defaults()


def test_bentofile_keeps_bentomls_own_dockerfile(build_config):
    # a custom template or setup script could switch the user back to root; the image build uses neither
    assert build_config.docker.dockerfile_template is None and build_config.docker.setup_script is None


def test_legacy_dockerfile_the_image_is_built_from_runs_as_non_root(build_config, tmp_path):
    """scripts/build_image.sh bundles a torch wheel, so BentoML 1.4 builds the image from its legacy Dockerfile."""
    from bentoml._internal.container.generate import generate_containerfile

    dockerfile = generate_containerfile(build_config.docker, str(REPO), conda=build_config.conda, bento_fs=tmp_path,
                                        enable_buildkit=False)
    user = _final_user(dockerfile)
    _non_root(user, dockerfile)
    # the USER line comes after every RUN, right before the entrypoint
    tail = dockerfile[dockerfile.rindex(f"USER {user}"):]
    assert "ENTRYPOINT" in tail and not re.search(r"^RUN ", tail, re.M)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic 2.11 on _bentoml_sdk
def test_v2_dockerfile_of_a_plain_bentoml_build_runs_as_non_root(build_config, tmp_path):
    """`bentoml build` on bentofile.yaml as it is (no wheels) writes the v2 Dockerfile."""
    from _bentoml_impl.docker import generate_dockerfile
    from _bentoml_sdk.images import populate_image_from_build_config
    from bentoml._internal.bento.bento import ImageInfo

    image = populate_image_from_build_config(None, build_config, str(REPO))
    assert image is not None
    info = ImageInfo(base_image=image.base_image, python_version=image.python_version, commands=image.commands,
                     post_commands=image.post_commands)
    dockerfile = generate_dockerfile(info, tmp_path)
    _non_root(_final_user(dockerfile), dockerfile)


def test_build_script_refuses_an_image_that_runs_as_root():
    script = (REPO / "scripts" / "build_image.sh").read_text()
    assert re.search(r'\["OCIv1"\]\["config"\]\.get\("User"\)', script)
    assert "runs as root" in script and "IMAGE_USER" in script
