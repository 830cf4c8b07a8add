"""Short load tests (loadtests/run.py + loadtests/locustfile.py) on the session's trained artifact: the embedded
Bento and the Triton-backed Bento stay within the ``ci`` budget, the deliberately invalid requests are answered 4xx
(successes, not failures), and an impossible budget makes the runner exit non-zero naming the broken figure.

The embedded run starts the shipped configuration through the runner (``--start-embedded``: a worker per core,
busy keep-alive connections released); the impossible-budget check uses conftest's session ``bento``; the Triton
run starts its own servers through the runner (``--start-triton``) on conftest's session ``cpu_repo``
(``--triton-repo``: no second repository build). The budget check itself (no servers) is in the fast loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import triton_launcher

pytest.importorskip("locust")
pytest.importorskip("httpx")

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "loadtests" / "run.py"


def run_loadtest(tmp_path: Path, *args: str, run_time: str = "20s", timeout: int = 420):
    csv_dir = tmp_path / "csv"
    r = subprocess.run([sys.executable, str(RUNNER), "--users", "2", "--spawn-rate", "2", "--run-time", run_time,
                        "--csv-dir", str(csv_dir), *args], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    print(r.stdout[-6000:], r.stderr[-3000:])
    summary = csv_dir / "loadtest_summary.json"  # the locustfile's final figures, as the runner reads them
    rows = json.loads(summary.read_text())["stats"] if summary.exists() else {}
    return r, rows


def assert_invalid_answered_4xx(rows: dict) -> None:
    invalid = rows["/score [invalid]"]  # the locustfile fails these unless 4xx with the matching error code
    assert invalid["requests"] >= 3  # each kind at least once
    assert invalid["failures"] == 0
    assert rows["Aggregated"]["failures"] == 0


@pytest.mark.slow
def test_embedded_within_ci_budget(trained_artifact, tmp_path) -> None:
    # the shipped configuration, as the runner starts it: a worker per core, busy connections released
    r, rows = run_loadtest(tmp_path, "--start-embedded", "--model", str(trained_artifact), "--budget", "ci")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "budget met" in r.stdout
    assert rows["/score"]["requests"] > 0 and rows["/score_batch"]["requests"] > 0
    assert_invalid_answered_4xx(rows)


@pytest.mark.slow
def test_impossible_budget_fails_and_names_the_figure(bento, tmp_path) -> None:
    budget = tmp_path / "impossible.toml"
    budget.write_text('[impossible]\nmax_error_rate = 0.5\n\n[impossible.endpoints."/score"]\np95_ms = 0.001\n')
    r, _ = run_loadtest(tmp_path, "--host", bento.url, "--budget", "impossible", "--budget-file", str(budget),
                        run_time="6s")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "BUDGET BROKEN: /score p95_ms" in r.stdout
    broken = [line for line in r.stdout.splitlines() if line.split()[:2] == ["/score", "p95_ms"]]
    assert broken and "BROKEN" in broken[0], r.stdout


@pytest.mark.slow
@pytest.mark.skipif(not triton_launcher.is_installed(), reason="tritonserver binary not installed")
def test_triton_within_ci_budget(trained_artifact, cpu_repo, stub_env, tmp_path) -> None:
    r, rows = run_loadtest(tmp_path, "--start-triton", "--model", str(trained_artifact), "--triton-repo",
                           str(cpu_repo), "--budget", "ci")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "budget met" in r.stdout
    assert_invalid_answered_4xx(rows)


def test_target_profile_judges_latency_at_1_user_and_throughput_at_8() -> None:
    import importlib.util

    import tomllib

    spec = importlib.util.spec_from_file_location("loadtest_run", RUNNER)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    target = tomllib.loads((REPO / "loadtests" / "budget.toml").read_text())["target"]
    row = {"requests": 100, "failures": 0, "p50": 120.0, "p95": 140.0, "p99": 160.0}
    stats = {"rows": {"/score": row, "Aggregated": row}, "essays": 400, "duration_s": 100.0, "essays_per_s": 4.0}
    _, broken = runner.check(stats, target, users=1)  # p95 140 <= 150 judged; 4 essays/s not judged at 1 user
    assert broken == []
    _, broken = runner.check(stats, target, users=8)  # 4 < 15 essays/s judged at 8 users; latency not judged
    assert broken == ["all essays_per_s"]
    slow = {**row, "p95": 400.0}
    _, broken = runner.check({**stats, "rows": {"/score": slow, "Aggregated": slow}}, target, users=1)
    assert broken == ["/score p95_ms"]
