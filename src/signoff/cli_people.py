"""``signoff token …``: the tokens people and automations sign in with, worked on the
database directly (like ``db upgrade``), for whoever runs signoff."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from signoff import errors
from signoff.cli_support import err, load_settings, run_on_service
from signoff.lifecycle import Role

token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The principal: shown as requested_by/decided_by.")],
    role: Annotated[Role, typer.Option(help="requester, approver, viewer or admin.")],
) -> None:
    """Create an API token and print it (shown only this once) as the last line."""
    if not name.strip() or len(name) > 200:
        err.print("[red]NAME must be 1 to 200 characters[/]")
        raise typer.Exit(2)
    settings = load_settings(ctx)
    secret = run_on_service(ctx, settings, lambda service: service.create_token(name, role))
    err.print(f"token for [bold]{name}[/] ({role.value}); it is stored hashed, keep it now:")
    print(secret, flush=True)


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Every token: name, role, created, last used (to the minute), revoked."""
    settings = load_settings(ctx)
    found = run_on_service(ctx, settings, lambda service: service.list_tokens())
    if as_json:
        print(json.dumps({"items": found}), flush=True)
        return
    table = Table("name", "role", "created", "last used", "revoked")
    for t in found:
        table.add_row(t["name"], t["role"], t["created_at"], t["last_used_at"] or "never",
                      t["revoked_at"] or "", style="dim" if t["revoked"] else None)
    Console().print(table)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The principal whose live tokens stop working.")],
) -> None:
    """Revoke every live token of NAME, at once on every server (it is kept, revoked)."""
    settings = load_settings(ctx)
    try:
        count = run_on_service(ctx, settings, lambda service: service.revoke_tokens(name))
    except errors.TokenNotFound as exc:
        err.print(f"[red]signoff: {exc.message}[/]; signoff token list shows the tokens")
        raise typer.Exit(2) from None
    err.print(f"revoked {count} token{'s' if count != 1 else ''} of [bold]{name}[/]")


group_app = typer.Typer(help="Approver groups: add, remove, list.", no_args_is_help=True)


def _group_change(ctx: typer.Context, verb: str, group: str, members: list[str]) -> list[str]:
    settings = load_settings(ctx)
    try:
        return run_on_service(ctx, settings, lambda service: (
            service.add_to_group(group, members) if verb == "add"
            else service.remove_from_group(group, members)))
    except errors.InvalidInput as exc:
        err.print(f"[red]signoff: {exc.message}[/]", highlight=False)
        raise typer.Exit(2) from None


@group_app.command("add")
def group_add(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="The group, named in approvers as group:GROUP.")],
    members: Annotated[list[str], typer.Argument(help="Principals' names.")],
) -> None:
    """Add MEMBERs to GROUP (made by its first member); audited."""
    added = _group_change(ctx, "add", group, members)
    already = [m for m in members if m not in added]
    err.print(f"group [bold]{group}[/]: added {', '.join(added) or 'nobody'}"
              + (f"; already in it: {', '.join(already)}" if already else ""), highlight=False)


@group_app.command("remove")
def group_remove(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="The group.")],
    members: Annotated[list[str], typer.Argument(help="Principals' names.")],
) -> None:
    """Take MEMBERs out of GROUP (kept as history); audited. A group with no member left
    is no more: requests cannot name it."""
    removed = _group_change(ctx, "remove", group, members)
    missing = [m for m in members if m not in removed]
    err.print(f"group [bold]{group}[/]: removed {', '.join(removed) or 'nobody'}"
              + (f"; not in it: {', '.join(missing)}" if missing else ""), highlight=False)


@group_app.command("list")
def group_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Every group and its members, with since when and who added them."""
    settings = load_settings(ctx)
    groups = run_on_service(ctx, settings, lambda service: service.list_groups())
    if as_json:
        print(json.dumps({"groups": groups}), flush=True)
        return
    table = Table("group", "member", "since", "added by")
    for group, members in groups.items():
        for m in members:
            table.add_row(group, m["member"], m["since"], m["by"])
    Console().print(table)


link_app = typer.Typer(help="Single-use links to decide one request.", no_args_is_help=True)


@link_app.command("create")
def link_create(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The pending request.")],
    principal: Annotated[str, typer.Option("--for", help="Who decides through it.")],
) -> None:
    """A link that signs PRINCIPAL in for this request alone; printed as the last line.
    It works until it is used, the request ends or its deadline passes."""
    settings = load_settings(ctx)
    try:
        made = run_on_service(ctx, settings, lambda service: service.create_link(
            None, request_id, principal))
    except errors.SignoffError as exc:
        err.print(f"[red]signoff: {exc.message}[/]", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"a link for [bold]{principal}[/], until {made['expires_at']}; give it to "
              "them alone:", highlight=False)
    print(made["url"], flush=True)
