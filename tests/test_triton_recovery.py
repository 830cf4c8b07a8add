"""A Triton python-backend stub killed: the Triton runtime answers a clear RuntimeUnavailable (the service's 503)
and has Triton reload the model, so scoring recovers with nobody acting (essayscore.triton_recovery).

The slow tests run a REAL tritonserver on the session's cpu repository, started as the launcher starts it
(explicit model control, every model loaded), and SIGKILL the ``preprocess`` model's stub process. The Bento-level
check of the same fault is ``python loadtests/faults.py triton-stub`` (docs/reliability.md, "Faults").
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from devtools import triton_launcher
from devtools.servers import TritonServer
from essayscore.triton_recovery import dead_stub_model


@pytest.mark.parametrize(("message", "model"), [
    ("[500] in ensemble 'essay_scorer', Stub process 'preprocess_0_0' is not healthy.", "preprocess"),
    ("Stub process 'trees_and_explain_1_3' is not healthy.", "trees_and_explain"),
    ("[StatusCode.INTERNAL] in ensemble 'essay_scorer', Stub process 'postprocess_0_0' is not healthy.",
     "postprocess"),
    ("in ensemble 'essay_scorer', preprocess: ESSAY is empty or only whitespace", None),
    ("[StatusCode.UNAVAILABLE] failed to connect to all addresses", None),
])
def test_the_model_of_a_dead_stub_is_read_from_the_error(message, model):
    assert dead_stub_model(RuntimeError(message)) == model


def _stub_pids(server: TritonServer, model: str) -> list[int]:
    import psutil

    out = []
    for child in psutil.Process(server.pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "triton_python_backend_stub" in cmd and f"/{model}/" in cmd:
            out.append(child.pid)
    return out


@pytest.fixture(scope="module")
def triton(cpu_repo, stub_env, tmp_path_factory):
    if not triton_launcher.is_installed():
        pytest.skip("tritonserver binary not installed (scripts/install_triton.sh)")
    log = tmp_path_factory.mktemp("triton-recovery") / "server.log"
    with TritonServer(cpu_repo, log_path=log, stub_python_env=stub_env).start(timeout_s=180) as server:
        yield server


ESSAY = ("Some people believe that students should study abroad, because living in another country teaches them "
         "independence and a new language. Others think the cost is too high for most families. In my opinion the "
         "benefits are real, but universities at home can offer exchange programmes that give the same chance.")


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_killed_stub_gives_a_clear_outage_then_recovers_by_itself(triton, trained_artifact, protocol):
    from essayscore.runtimes import RuntimeUnavailable
    from essayscore.runtimes.triton import TritonRuntime

    runtime = TritonRuntime(trained_artifact, url=triton.url(protocol), protocol=protocol, timeout_s=10, retries=2)
    before = runtime.infer(ESSAY, None)
    victims = _stub_pids(triton, "preprocess")
    assert len(victims) == 1, victims
    os.kill(victims[0], signal.SIGKILL)
    time.sleep(0.5)

    with pytest.raises(RuntimeUnavailable) as outage:
        runtime.infer(ESSAY, None)
    assert "'preprocess'" in str(outage.value) and "reload" in str(outage.value)
    assert runtime.reloader is not None and runtime.reloader.wait(90), "the reload did not finish"
    record = runtime.reloader.history[-1]
    assert record.model == "preprocess" and record.error is None, record
    new = _stub_pids(triton, "preprocess")
    assert len(new) == 1 and new[0] != victims[0], (victims, new)

    deadline = time.monotonic() + 30  # the ensemble may take a moment to pick up the reloaded step
    while True:
        try:
            after = runtime.infer(ESSAY, None)
            break
        except RuntimeUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert after.ielts_band == before.ielts_band and after.cefr == before.cefr
    assert abs(after.ielts_raw - before.ielts_raw) < 1e-5
