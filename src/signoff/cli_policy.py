"""``signoff policy``: ``check FILE`` reads a policy file here; ``show``, ``explain``,
``shadow``, ``pause`` and ``resume`` talk to a server at ``SIGNOFF_URL`` with
``SIGNOFF_TOKEN``, like the other client commands (exit 1 for an error, 2 for bad usage).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from signoff.cli_client import AsJson, RequestId, Token, Url, client_for
from signoff.policy import PolicyError, read_policy

policy_app = typer.Typer(help="The auto-approval policy.", no_args_is_help=True)


def add_policy_commands(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


@policy_app.command("check")
def check(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="A policy file (TOML).")],
) -> None:
    """Check a policy file here, without a server: exit 1 with each error and its line."""
    try:
        policy = read_policy(path)
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        raise typer.Exit(1) from None
    enforce = sum(r.mode == "enforce" for r in policy.rules)
    print(f"{path}: {len(policy.rules)} rule(s), {enforce} enforce, "
          f"{len(policy.rules) - enforce} shadow")
    for rule in policy.rules:
        print(f"  {rule.name} ({rule.mode}): {', '.join(rule.actions)}")


def _rule_line(rule: dict[str, Any]) -> str:
    rest = {k: v for k, v in rule.items() if k not in ("name", "mode", "actions")}
    extra = "".join(f"; {k} {json.dumps(v)}" for k, v in rest.items())
    return f"  {rule['name']} ({rule.get('mode', 'shadow')}): {', '.join(rule['actions'])}{extra}"


@policy_app.command("show")
def show(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """The server's policy: its rules, a broken file's error, and whether it is paused."""
    with client_for(url, token) as client:
        state = client.policy()
    if as_json:
        _print_json(state)
        return
    if state["source"] is None:
        print("no policy file: nothing is auto-approved")
    else:
        print(f"source: {state['source']} (loaded {state['loaded_at']})")
    if state["error"]:
        print(f"error (the last good rules stay in use): {state['error']}")
    paused = state["paused"]
    if paused:
        print(f"PAUSED by {paused['by']} at {paused['at']}: {paused['reason']}")
    for rule in state["rules"]:
        print(_rule_line(rule))


@policy_app.command("explain")
def explain(
    request_id: RequestId, url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Why the policy approved a request, or did not: every rule and its reasons."""
    with client_for(url, token) as client:
        found = client.get(request_id)
    verdict = found.get("policy")
    if as_json:
        _print_json(verdict)
        return
    if verdict is None:
        print(f"request {found['id']}: no policy was in use when it was created")
        return
    rule = f" by rule {verdict['rule']}" if verdict["rule"] else ""
    print(f"request {found['id']} ({found['action']}): {verdict['decision']}{rule}")
    for e in verdict["evaluations"]:
        print(f"  {e['rule']} ({e['mode']}): {'holds' if e['holds'] else 'does not hold'}")
        for reason in e["reasons"]:
            print(f"    - {reason}")


@policy_app.command("shadow")
def shadow(
    since: Annotated[str | None, typer.Option(help="RFC 3339 time (default: all time).",
                                              show_default=False)] = None,
    until: Annotated[str | None, typer.Option(help="RFC 3339 time (default: now).",
                                              show_default=False)] = None,
    url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Each rule's verdicts against what people decided, over requests that ended."""
    with client_for(url, token) as client:
        figures = client.policy_shadow(since, until)
    if as_json:
        _print_json(figures)
        return
    print(f"{'rule':<28} {'mode':<8} {'would':>6} {'agreed':>7} {'disagreed':>9} "
          f"{'undecided':>9} {'missed':>6} {'agreement':>9}")
    for r in figures["rules"]:
        rate = "-" if r["agreement_rate"] is None else f"{r['agreement_rate']:.0%}"
        print(f"{r['rule']:<28} {r['mode']:<8} {r['would_approve']:>6} {r['agreed']:>7} "
              f"{r['disagreed']:>9} {r['undecided']:>9} {r['missed']:>6} {rate:>9}")
        for rid in r["disagreements"]:
            print(f"  disagreed: {rid}")


@policy_app.command("pause")
def pause(
    reason: Annotated[str, typer.Option(help="Why: kept in the audit trail.",
                                        show_default=False)],
    url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Stop all auto-approval on every replica at once (admin)."""
    with client_for(url, token) as client:
        state = client.pause_policy(reason)
    if as_json:
        _print_json(state)
    else:
        print(f"policy paused by {state['paused']['by']}: {state['paused']['reason']}")


@policy_app.command("resume")
def resume(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Let the policy approve again (admin)."""
    with client_for(url, token) as client:
        state = client.resume_policy()
    if as_json:
        _print_json(state)
    else:
        print("policy resumed")
