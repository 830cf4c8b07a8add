"""The retraining schedule under deploy/retrain/: the manifests parse, and what they run is a real command line of
this CLI (parsed by its own argparse), with the artifacts folder the service reads its champion from."""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

from essayscore.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "retrain"


def test_the_cronjob_runs_the_retraining_gate_monthly_one_at_a_time():
    job = yaml.safe_load((DEPLOY / "cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    minute, hour, day, month, weekday = spec["schedule"].split()
    assert day == "1" and month == "*" and weekday == "*"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    argv = container["command"] + container.get("args", [])
    assert argv[0] == "essayscore"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "retrain"
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["ESSAYSCORE_ARTIFACTS_DIR"] == mounts["artifacts"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_systemd_timer_runs_the_same_command():
    service = configparser.ConfigParser(interpolation=None, strict=False)
    service.read_string((DEPLOY / "essayscore-retrain.service").read_text())
    argv = service["Service"]["ExecStart"].split()
    assert argv[0].endswith("/essayscore")
    assert build_parser().parse_args(argv[1:]).command == "retrain"
    timer = configparser.ConfigParser(interpolation=None)
    timer.read_string((DEPLOY / "essayscore-retrain.timer").read_text())
    assert timer["Timer"]["OnCalendar"].startswith("*-*-01")
