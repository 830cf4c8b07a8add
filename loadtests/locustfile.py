"""Realistic traffic for the essayscore Bento (BentoML example style).

    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000      (or: python loadtests/run.py ...)

Essays come from the shared IELTS set (ESSAYSCORE_LOADTEST_DATA overrides the path): about half are sent with their
prompt, a few ask for explain=true, some /score_batch calls carry 2-8 essays, and ~5% of requests are deliberately
invalid (empty essay, wrong type, too long). Invalid ones are reported under "<path> [invalid]" and count as
successes only when answered 4xx with the error shape. The number of essays scored is written next to the --csv
files (<prefix>_summary.json, with the final per-endpoint figures) for the runner. ``--tags score`` runs the
/score task alone (the throughput sweep of benchmarks/bench_service.py).
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from pathlib import Path

from locust import HttpUser, between, events, tag, task

DATA = Path(os.environ.get("ESSAYSCORE_LOADTEST_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "ielts-task2" / "essays.csv"))
with open(DATA, newline="", encoding="utf-8") as f:
    ESSAYS = [(r["essay"], r["prompt"]) for r in csv.DictReader(f) if r["essay"].strip()]
INVALID = [("empty", {"essay": "   "}), ("wrong_type", {"essay": 12345}),
           ("too_long", {"essay": "word " * 4001})]  # 20,005 characters > max_essay_chars
COUNTS = {"essays": 0, "start": None, "stop": None}


def item(rng: random.Random) -> dict:
    essay, prompt = rng.choice(ESSAYS)
    body = {"essay": essay}
    if rng.random() < 0.5:
        body["prompt"] = prompt
    return body


class EssayScoreUser(HttpUser):
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.metadata()  # a client reads the limits once
        for kind, body in INVALID:  # every kind at least once per user, then ~5% of the traffic at random
            self._invalid(kind, body)

    @tag("score")
    @task(14)
    def score(self) -> None:
        body = item(self.rng)
        body["explain"] = self.rng.random() < 0.05
        body["include_issues"] = self.rng.random() < 0.1
        with self.client.post("/score", json=body, name="/score", catch_response=True) as r:
            if r.status_code == 200 and "ielts_band" in r.json():
                COUNTS["essays"] += 1
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")

    @tag("batch")
    @task(3)
    def score_batch(self) -> None:
        items = [item(self.rng) for _ in range(self.rng.randint(2, 8))]
        with self.client.post("/score_batch", json={"items": items}, name="/score_batch", catch_response=True) as r:
            ok = r.status_code == 200 and [x["ok"] for x in r.json()["results"]] == [True] * len(items)
            if ok:
                COUNTS["essays"] += len(items)
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")

    @task(1)
    def metadata(self) -> None:
        self.client.get("/metadata", name="/metadata")

    @task(1)  # 1/19 ~ 5% of requests
    def invalid(self) -> None:
        self._invalid(*self.rng.choice(INVALID))

    def _invalid(self, kind: str, body: dict) -> None:
        with self.client.post("/score", json=body, name="/score [invalid]", catch_response=True) as r:
            try:
                code = r.json()["error"]["code"]
            except Exception:  # noqa: BLE001 - anything but the error shape is a failure
                code = None
            if 400 <= r.status_code < 500 and code == kind:
                r.success()
            else:
                r.failure(f"invalid request ({kind}) answered {r.status_code}: {r.text[:200]}")


@events.test_start.add_listener
def _start(environment, **_) -> None:
    COUNTS["start"] = time.time()


@events.test_stop.add_listener
def _stop(environment, **_) -> None:
    COUNTS["stop"] = time.time()
    prefix = getattr(environment.parsed_options, "csv_prefix", None) if environment.parsed_options else None
    if prefix:  # the final figures (the periodic CSVs can miss requests that finished while the users stopped)
        entries = {e.name: e for e in environment.stats.entries.values()}
        entries["Aggregated"] = environment.stats.total
        stats = {name: {"requests": e.num_requests, "failures": e.num_failures,
                        **{f"p{q}": e.get_response_time_percentile(q / 100) if e.num_requests else 0.0
                           for q in (50, 95, 99)}} for name, e in entries.items()}
        Path(f"{prefix}_summary.json").write_text(json.dumps({**COUNTS, "stats": stats}, indent=1))
