"""Wait for a served essayscore Bento, POST one real essay to /score and check that a band comes back.

    python scripts/image/smoke_score.py --url http://127.0.0.1:PORT --essays examples/essays.csv [--wait 600]
           [--pid PID]   # give up early when this process (the `buildah run`) has exited

Prints "SCORE_CHECK=PASS band=... cefr=..." (exit 0) or "SCORE_CHECK=FAIL <why>" (exit 1), and a response excerpt.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import urllib.error
import urllib.request


def get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def alive(pid: int | None) -> bool:
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--essays", required=True)
    ap.add_argument("--wait", type=float, default=600)
    ap.add_argument("--pid", type=int, default=0)
    args = ap.parse_args()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never through a proxy
    urllib.request.install_opener(opener)

    t0 = time.time()
    while get(args.url + "/readyz") != 200:
        if not alive(args.pid):
            print("SCORE_CHECK=FAIL the server process exited before /readyz answered 200")
            return 1
        if time.time() - t0 > args.wait:
            print(f"SCORE_CHECK=FAIL /readyz not 200 after {args.wait:.0f}s")
            return 1
        time.sleep(2)
    ready_s = time.time() - t0
    print(f"READY after {ready_s:.1f}s (/readyz 200)")

    rows = [r for r in csv.DictReader(open(args.essays, encoding="utf-8")) if len(r["essay"].split()) >= 150]
    row = rows[0]
    body = json.dumps({"essay": row["essay"], "prompt": row["prompt"], "essay_id": row["id"]}).encode()
    req = urllib.request.Request(args.url + "/score", data=body, headers={"Content-Type": "application/json"})
    t1 = time.time()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode(errors="replace")
    latency = time.time() - t1
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        payload = None
    if status != 200 or not isinstance(payload, dict) or not isinstance(payload.get("ielts_band"), (int, float)):
        print(f"SCORE_CHECK=FAIL POST /score answered {status}: {text[:800]}")
        return 1
    excerpt = {k: payload.get(k) for k in ("essay_id", "ielts_band", "ielts_band_label", "band_interval", "cefr",
                                           "cefr_probabilities", "model_version", "runtime")}
    excerpt["warnings"] = [w.get("code") for w in payload.get("warnings") or []]
    excerpt["timings.total_ms"] = (payload.get("timings") or {}).get("total_ms")
    print(f"SCORE_RESPONSE ({row['id']}, {len(row['essay'].split())} words, HTTP {status}, {latency:.2f}s): "
          + json.dumps(excerpt))
    print(f"SCORE_CHECK=PASS band={payload['ielts_band']} cefr={payload.get('cefr')} "
          f"model={payload.get('model_version')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
