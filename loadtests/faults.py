"""Fault injection against a real Bento (and Triton): what clients see, and how long recovery takes.

    python loadtests/faults.py worker-kill  [--model artifacts/vX]   # SIGKILL one of 2 Bento workers mid-load
    python loadtests/faults.py timeout      [--model artifacts/vX]   # a request past the guard's timeout: 504
    python loadtests/faults.py triton-stub  [--model artifacts/vX]   # SIGKILL a Triton python-backend stub mid-load
    python loadtests/faults.py all --out /tmp/faults                  # the three, one JSON each + faults.json

Each check starts its own servers on free 127.0.0.1 ports (devtools.servers), drives /score from a few client
threads (real essays from the shared IELTS set), injects the fault, and records every request's outcome (status and
error code, or the connection error) with its time relative to the fault, the recovery times, and a verdict
(exit 1 when a check fails, 2 when it could not run). docs/reliability.md "Faults" records the results.

* worker-kill: ``ESSAYSCORE_WORKERS=2``; one worker PID gets SIGKILL. Expected: the requests in flight on that
  worker fail (the connection drops; no wrong answer), BentoML's process manager (circus) starts a new worker
  (new PID), it loads the model, and every later request succeeds (fresh connections too).
* timeout: the service with ``ESSAYSCORE_REQUEST_TIMEOUT_S=1`` (the request guard's timeout, 300 s by default): a
  /score_batch that takes longer gets 504 ``{"error": {"code": "timeout", ...}}`` at the timeout, and the service
  keeps answering.
* triton-stub: Triton on a cpu repository of the artifact (its own int8 export), a Bento with
  ``ESSAYSCORE_RUNTIME=triton``; the ``preprocess`` model's python stub gets SIGKILL, and nobody acts. Recorded:
  what /score answers, when a new stub appears, and when /score succeeds again (the Bento's Triton runtime asks
  Triton to reload the model: essayscore.triton_recovery). Passes only when every failure is 503
  ``runtime_unavailable`` and /score recovers within 60 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DATA = Path(os.environ.get("ESSAYSCORE_LOADTEST_DATA",
                           REPO.parent / "shared" / "data" / "ielts-task2" / "essays.csv"))
WORKER_MARK = "_bentoml_impl.worker.service"
STUB_MARK = "triton_python_backend_stub"


def essays(n: int = 40, seed: int = 0) -> list[str]:
    with open(DATA, newline="", encoding="utf-8") as f:
        rows = [r["essay"] for r in csv.DictReader(f) if r["essay"].strip()]
    return random.Random(seed).sample(rows, min(n, len(rows)))


def descendants(pid: int, mark: str) -> list:
    import psutil

    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            if mark in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def outcome_of(response) -> str:
    if response.status_code == 200:
        return "ok"
    try:
        body = response.json()
        code = body["error"]["code"] if isinstance(body.get("error"), dict) else f"unshaped:{body}"[:80]
    except Exception:  # noqa: BLE001 - a body that is not the error shape is recorded as such
        code = "unshaped:" + response.text[:60]
    return f"{response.status_code} {code}"


class Load:
    """``threads`` clients posting /score in a loop; each request recorded as (t_start, t_end, outcome, detail),
    times relative to :attr:`t0`. ``fresh_connections``: a new connection per request (else keep-alive)."""

    def __init__(self, url: str, threads: int = 3, fresh_connections: bool = False, timeout_s: float = 60) -> None:
        self.url, self.threads, self.fresh, self.timeout_s = url, threads, fresh_connections, timeout_s
        self.texts = essays()
        self.records: list[tuple[float, float, str, str]] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _loop(self, i: int) -> None:
        import httpx

        rng = random.Random(i)
        client = None
        while not self._stop.is_set():
            if client is None:
                client = httpx.Client(base_url=self.url, timeout=self.timeout_s)
            start = self.now()
            try:
                r = client.post("/score", json={"essay": rng.choice(self.texts)})
                outcome, detail = outcome_of(r), r.text[:200] if r.status_code != 200 else ""
            except httpx.HTTPError as exc:
                outcome, detail = f"connection {type(exc).__name__}", str(exc)[:200]
                client.close()
                client = None
            with self._lock:
                self.records.append((round(start, 3), round(self.now(), 3), outcome, detail))
            if self.fresh and client is not None:
                client.close()
                client = None
            if outcome != "ok":
                time.sleep(0.1)  # no hot loop against a dead server
        if client is not None:
            client.close()

    def start(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=self.timeout_s + 5)


def summarise(records: list[tuple[float, float, str, str]], t_fault: float) -> dict:
    """Outcomes before / after the fault, the failures with their times relative to it, and recovery: the end of
    the last failed request (relative to the fault) when successes follow it."""
    before = Counter(o for s, e, o, _ in records if e < t_fault)
    after = Counter(o for s, e, o, _ in records if e >= t_fault)
    failed = [(round(s - t_fault, 2), round(e - t_fault, 2), o, d) for s, e, o, d in records
              if o != "ok" and e >= t_fault]
    last_fail_end = max((e for _, e, _, _ in failed), default=None)
    ok_after = [e - t_fault for s, e, o, _ in records if o == "ok" and e >= t_fault]
    ok_after_last_fail = [t for t in ok_after if last_fail_end is None or t > last_fail_end]
    return {"before": dict(before), "after": dict(after), "failures_after_fault": failed[:40],
            "n_failures_after_fault": len(failed),
            "first_failure_s": min((e for _, e, _, _ in failed), default=None),
            "last_failure_s": last_fail_end,
            "first_ok_after_last_failure_s": round(min(ok_after_last_fail), 2) if ok_after_last_fail else None,
            "ok_after_last_failure": len(ok_after_last_fail)}


# --------------------------------------------------------------------------------------------------
# worker kill
# --------------------------------------------------------------------------------------------------
def worker_kill(model: Path, stack: ExitStack, log_dir: Path, settle_s: float = 4.0, watch_s: float = 90.0) -> dict:
    from devtools.servers import BentoServer

    server = BentoServer(model, ESSAYSCORE_MODEL_TAG=str(model), ESSAYSCORE_RUNTIME="embedded",
                         ESSAYSCORE_WORKERS="2", log_path=log_dir / "bento-worker-kill.log")
    stack.callback(server.stop)
    server.start()
    assert server.pid is not None
    workers = descendants(server.pid, WORKER_MARK)
    if len(workers) != 2:
        raise RuntimeError(f"expected 2 BentoML workers, found {[p.pid for p in workers]}")
    load = Load(server.url, threads=3).start()
    time.sleep(settle_s)

    def connections(proc) -> int:  # the load's keep-alive connections this worker holds
        try:
            return sum(1 for c in proc.net_connections(kind="tcp")
                       if c.status == "ESTABLISHED" and c.laddr and c.laddr.port == server.port)
        except Exception:  # noqa: BLE001 - a worker that cannot be inspected holds none we know of
            return 0

    held = {w.pid: connections(w) for w in workers}
    victim = max(workers, key=lambda w: held[w.pid])  # the worker serving the load: requests are in flight there
    rss_before = victim.memory_info().rss / 2**20
    t_kill = load.now()
    os.kill(victim.pid, signal.SIGKILL)
    restarted_s = loaded_s = None
    new_pid = None
    deadline = time.monotonic() + watch_s
    while time.monotonic() < deadline:
        current = {p.pid: p for p in descendants(server.pid, WORKER_MARK)}
        fresh = [pid for pid in current if pid not in {w.pid for w in workers}]
        if fresh and restarted_s is None:
            new_pid, restarted_s = fresh[0], load.now() - t_kill
        if new_pid is not None and loaded_s is None:
            try:
                if current[new_pid].memory_info().rss / 2**20 >= 0.8 * rss_before:
                    loaded_s = load.now() - t_kill
            except Exception:  # noqa: BLE001 - the new worker may die too: then it is not loaded
                pass
        if loaded_s is not None and load.now() - t_kill > loaded_s + 10:
            break
        time.sleep(0.2)
    load.stop()
    # the restarted worker answers too: fresh connections spread over both workers' accept() calls
    probe = Load(server.url, threads=2, fresh_connections=True)
    probe.start()
    time.sleep(8)
    probe.stop()
    probe_outcomes = Counter(o for _, _, o, _ in probe.records)
    summary = summarise(load.records, t_kill)
    alive = [p.pid for p in descendants(server.pid, WORKER_MARK)]
    ok = (restarted_s is not None and loaded_s is not None and len(alive) == 2
          and summary["ok_after_last_failure"] > 0 and set(probe_outcomes) == {"ok"}
          and all(o.startswith("connection") or o.startswith("50") for _, _, o, _ in summary["failures_after_fault"]))
    return {"check": "worker-kill", "ok": ok, "killed_pid": victim.pid, "killed_rss_mb": round(rss_before),
            "connections_held_at_kill": held,
            "new_pid": new_pid, "workers_at_end": alive,
            "worker_restarted_s": None if restarted_s is None else round(restarted_s, 2),
            "new_worker_loaded_s": None if loaded_s is None else round(loaded_s, 2),
            "probe_fresh_connections": dict(probe_outcomes), **summary}


# --------------------------------------------------------------------------------------------------
# timeout
# --------------------------------------------------------------------------------------------------
def request_timeout(model: Path, stack: ExitStack, log_dir: Path, timeout_s: float = 1.0) -> dict:
    import httpx

    from devtools.servers import BentoServer

    server = BentoServer(model, ESSAYSCORE_MODEL_TAG=str(model),
                         ESSAYSCORE_RUNTIME="embedded", ESSAYSCORE_REQUEST_TIMEOUT_S=str(timeout_s),
                         log_path=log_dir / "bento-timeout.log")
    stack.callback(server.stop)
    server.start()
    texts = essays(32, seed=1)
    with httpx.Client(base_url=server.url, timeout=120) as c:
        meta = c.get("/metadata")
        t = time.monotonic()
        slow = c.post("/score_batch", json={"items": [{"essay": e} for e in texts]})  # ~32 essays: seconds
        slow_s = time.monotonic() - t
        body = slow.json()
        t = time.monotonic()
        first_after = c.post("/score", json={"essay": texts[0][:1500]}).status_code
        first_after_s = time.monotonic() - t
        after_status = first_after
        if after_status == 504:  # the worker still finishes the abandoned batch: give it time, then retry
            time.sleep(15)
            after_status = c.post("/score", json={"essay": texts[0][:600]}).status_code
    err = body.get("error") if isinstance(body, dict) else None
    ok = (slow.status_code == 504 and isinstance(err, dict) and err.get("code") == "timeout"
          and set(err) == {"code", "message", "field"} and slow_s < timeout_s + 2 and meta.status_code == 200
          and after_status == 200)
    return {"check": "timeout", "ok": ok, "timeout_s": timeout_s, "status": slow.status_code, "body": body,
            "answered_after_s": round(slow_s, 2), "metadata_status": meta.status_code,
            "first_next_request": {"status": first_after, "answered_after_s": round(first_after_s, 2)},
            "next_request_status": after_status}


# --------------------------------------------------------------------------------------------------
# Triton python-backend stub kill
# --------------------------------------------------------------------------------------------------
def triton_stub_kill(model: Path, stack: ExitStack, log_dir: Path, stub_model: str = "preprocess",
                     watch_s: float = 60.0, repo: Path | None = None) -> dict:
    from devtools.servers import BentoServer, TritonServer, http_ok
    from devtools.triton_launcher import prepare_stub_env
    from training.repository import build_repository

    if repo is None:
        repo = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faults-triton-"))) / "model_repository"
        build_repository(model, repo, profile="cpu")
    # started as the launcher starts it (explicit model control, every model loaded): nothing special for the check
    triton = TritonServer(repo, stub_python_env=prepare_stub_env(), log_path=log_dir / "triton-stub-kill.log")
    stack.callback(triton.stop)
    triton.start(timeout_s=240)
    triton_pid = triton.pid
    assert triton_pid is not None
    bento = BentoServer(model, ESSAYSCORE_MODEL_TAG=str(model), ESSAYSCORE_RUNTIME="triton",
                        ESSAYSCORE_TRITON_URL=triton.http_url, ESSAYSCORE_TRITON_TIMEOUT_S="10",
                        log_path=log_dir / "bento-triton-stub-kill.log")
    stack.callback(bento.stop)
    bento.start()

    def stubs() -> dict[int, str]:
        out = {}
        for p in descendants(triton_pid, STUB_MARK):
            try:
                out[p.pid] = " ".join(p.cmdline())
            except Exception:  # noqa: BLE001 - a stub that just exited is not listed
                continue
        return out

    before = stubs()
    victims = [pid for pid, cmd in before.items() if f"/{stub_model}/" in cmd]
    if not victims:
        raise RuntimeError(f"no python stub for model {stub_model!r} among {list(before.values())}")
    load = Load(bento.url, threads=2).start()
    time.sleep(6)
    t_kill = load.now()
    os.kill(victims[0], signal.SIGKILL)
    ready_url = f"http://{triton.http_url}/v2/models/{stub_model}/ready"
    new_stub_s = None
    states = []
    back_s = None
    deadline = time.monotonic() + watch_s
    while time.monotonic() < deadline:  # nobody acts: watch for a new stub and for /score succeeding again
        now = stubs()
        if new_stub_s is None and any(f"/{stub_model}/" in cmd and pid not in before for pid, cmd in now.items()):
            new_stub_s = load.now() - t_kill
        states.append((round(load.now() - t_kill, 1), http_ok(ready_url), http_ok(bento.url + "/readyz", 2.0),
                       len(now)))
        after = [(e, o) for s, e, o, _ in load.records if s > t_kill + 0.5]
        failed = [e for e, o in after if o != "ok"]
        tail = [o for e, o in after if failed and e > max(failed)]
        if failed and len(tail) >= 10:  # failed, then ten answers in a row
            back_s = min(e for e, o in after if o == "ok" and e > max(failed)) - t_kill
            break
        time.sleep(0.5)
    time.sleep(3)
    load.stop()
    overall = summarise(load.records, t_kill)
    last = [o for _, _, o, _ in load.records[-4:]]
    recovered = bool(last) and set(last) == {"ok"}
    kinds = {o for _, _, o, _ in overall["failures_after_fault"]}
    clear_503 = bool(kinds) and kinds <= {"503 runtime_unavailable"}
    reload_lines = [line.strip() for line in (log_dir / "bento-triton-stub-kill.log").read_text(
        errors="replace").splitlines() if "triton: " in line][:6]
    # what issue 11 asks: clear 503s, then recovery with nobody acting
    ok = clear_503 and recovered and back_s is not None
    return {"check": "triton-stub", "ok": ok, "clear_503s": clear_503, "failure_kinds": sorted(kinds),
            "recovered_at_end": recovered, "first_ok_after_kill_s": None if back_s is None else round(back_s, 2),
            "new_stub_after_kill_s": None if new_stub_s is None else round(new_stub_s, 2),
            "stub_model": stub_model, "killed_stub_pid": victims[0], "stubs_before": len(before),
            "stubs_at_end": len(stubs()), "bento_log_reload_lines": reload_lines,
            "states_t_modelready_bentoready_stubs": states[::4], "overall": overall}


CHECKS: dict[str, Any] = {"worker-kill": worker_kill, "timeout": request_timeout, "triton-stub": triton_stub_kill}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("check", choices=[*CHECKS, "all"])
    p.add_argument("--model", type=Path, help="artifact folder; default: the latest in artifacts/")
    p.add_argument("--triton-repo", type=Path, help="an existing cpu model repository for triton-stub")
    p.add_argument("--out", type=Path, help="folder for the JSON results and the server logs")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="faults-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        from essayscore import artifacts

        args.model = artifacts.resolve("latest", REPO / "artifacts")
    model = args.model.resolve()
    results, code = [], 0
    for name in CHECKS if args.check == "all" else [args.check]:
        print(f"--- {name} ...", flush=True)
        with ExitStack() as stack:
            try:
                kwargs = {"repo": args.triton_repo} if name == "triton-stub" and args.triton_repo else {}
                result = CHECKS[name](model, stack, out, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a check that could not run
                result = {"check": name, "ok": None, "error": f"{type(exc).__name__}: {exc}"}
        results.append(result)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
        print(json.dumps(result, indent=1, default=str)[:6000], flush=True)
        if result["ok"] is None:
            code = max(code, 2)
        elif not result["ok"]:
            code = max(code, 1)
    (out / "faults.json").write_text(json.dumps(results, indent=1, default=str))
    print("\n" + "\n".join(f"{r['check']}: {'passed' if r['ok'] else 'FAILED' if r['ok'] is False else 'NOT RUN'}"
                           for r in results))
    print(f"results: {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
