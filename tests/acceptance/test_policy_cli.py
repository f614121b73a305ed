"""``signoff policy`` against a real ``signoff serve``: check, show, explain, shadow,
pause and resume; a changed file is in use within 5 s, and a broken one at start stops
``serve`` with exit 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.acceptance.conftest import run_signoff, start_server

EXAMPLE = Path(__file__).parents[2] / "deploy" / "policy.example.toml"
POLICY = """
[[rules]]
name = "restart-web"
mode = "enforce"
actions = ["restart pod web-*"]
"""


def test_policy_check_accepts_the_shipped_example(tmp_path: Path) -> None:
    done = run_signoff({}, "policy", "check", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert "2 rule(s), 1 enforce, 1 shadow" in done.stdout


def test_policy_check_names_the_line_of_each_error(tmp_path: Path) -> None:
    broken = tmp_path / "policy.toml"
    broken.write_text('[[rules]]\nname = "a"\nactions = ["x"]\nmax_risk = "huge"\n'
                      'hours = "9-5"\n')
    done = run_signoff({}, "policy", "check", str(broken))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["line 4", "line 5"]
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[[rules]]\nname = \n")
    done = run_signoff({}, "policy", "check", str(bad_toml))
    assert done.returncode == 1
    assert done.stderr.startswith("line 2: bad TOML")


def test_serve_refuses_to_start_with_a_broken_policy_file(tmp_path: Path) -> None:
    broken = tmp_path / "policy.toml"
    broken.write_text('[[rules]]\nname = "x"\n')
    env = {"SIGNOFF_DATABASE_URL": f"sqlite:///{tmp_path}/s.db",
           "SIGNOFF_POLICY_FILE": str(broken)}
    done = run_signoff(env, "serve", timeout=30)
    assert done.returncode == 2
    assert "line 1: actions (rule 'x'): required" in done.stderr


def test_the_policy_commands_drive_a_server(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    server = start_server(f"sqlite:///{tmp_path}/signoff.db", tmp_path / "serve.log",
                          SIGNOFF_POLICY_FILE=str(path))
    try:
        env = {**server.env, "SIGNOFF_URL": server.url}

        def cli(who: str, *args: str) -> str:
            done = run_signoff({**env, "SIGNOFF_TOKEN": server.tokens[who]}, *args)
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert "restart-web (enforce): restart pod web-*" in cli("viewer", "policy", "show")
        made = server.client("bot").post("/approvals", json={"action": "restart pod web-1"})
        assert made.json()["status"] == "approved"
        explained = cli("viewer", "policy", "explain", made.json()["id"])
        assert "approved by rule restart-web" in explained
        refused = run_signoff({**env, "SIGNOFF_TOKEN": server.tokens["alice"]},
                              "policy", "pause", "--reason", "x")
        assert refused.returncode == 1 and "forbidden" in refused.stderr
        assert "policy paused by root" in cli("root", "policy", "pause", "--reason",
                                              "bad deploy")
        assert "PAUSED by root" in cli("viewer", "policy", "show")
        held = server.client("bot").post("/approvals", json={"action": "restart pod web-2"})
        assert held.json()["policy"]["decision"] == "paused"
        assert cli("root", "policy", "resume").strip() == "policy resumed"
        shadow = json.loads(cli("viewer", "policy", "shadow", "--json"))
        assert shadow["rules"][0]["would_approve"] == 1  # the pending one does not count

        # A change of the file is in use within 5 s.
        path.write_text(POLICY.replace("restart-web", "restart-web-2"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            rules = server.client("viewer").get("/policy").json()["rules"]
            if rules[0]["name"] == "restart-web-2":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the changed policy file was not read within 5 s")
        path.write_text("[[rules]]\nname = 'broken'\n")
        deadline = time.monotonic() + 5
        while server.client("viewer").get("/policy").json()["error"] is None:
            assert time.monotonic() < deadline, "the broken file was not noticed within 5 s"
            time.sleep(0.2)
        state = server.client("viewer").get("/policy").json()
        assert state["rules"][0]["name"] == "restart-web-2"
        assert "signoff_policy_error 1.0" in server.client().get(server.url + "/metrics").text
        assert '"policy_reload_failed"' in server.log_path.read_text()
    finally:
        server.stop()
