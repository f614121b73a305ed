"""The Prometheus alerting rules shipped in ``deploy/prometheus``: valid for promtool, their
own unit tests pass, and every watchdog check has its alert on its own gauge."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from signoff.watchdog import IDS

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
REQUIRE = os.environ.get("SIGNOFF_REQUIRE_PROMTOOL") == "1"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        if REQUIRE:
            pytest.fail("promtool is required (SIGNOFF_REQUIRE_PROMTOOL=1) but not installed")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run([tool, *args], cwd=RULES, capture_output=True, text=True,
                          timeout=120, check=False)


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((RULES / "signoff-alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = _promtool("check", "rules", "signoff-alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_the_rules_own_unit_tests_pass() -> None:
    done = _promtool("test", "rules", "signoff-alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_watchdog_check_has_one_alert_on_its_gauge() -> None:
    by_check: dict[str, list[str]] = {}
    for rule in _rules():
        check = rule.get("labels", {}).get("watchdog")
        if check is not None:
            assert f'signoff_watchdog_findings{{check="{check}"}}' in rule["expr"], rule
            by_check.setdefault(check, []).append(rule["alert"])
    assert sorted(by_check) == sorted(IDS)
    assert all(len(alerts) == 1 for alerts in by_check.values()), by_check
