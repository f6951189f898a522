"""``appservices``: registering application services, through ``services.appservices``.

The appservice service is built separately; until it exists these commands answer
that appservices are not available, instead of failing.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..context import AdminContext
from ..render import code_block
from ..tree import Arg, Args, CommandError, Group
from .common import bullet_list

group = Group("appservices", "Commands for managing appservices")


def _service(ctx: AdminContext) -> Any:
    service = getattr(ctx.services, "appservices", None)
    if service is None:
        raise CommandError("Application services are not available on this server yet")
    return service


async def _call(ctx: AdminContext, method: str, *args: Any) -> Any:
    function = getattr(_service(ctx), method, None)
    if function is None:
        raise CommandError(f"Application services cannot `{method}` on this server yet")
    result = function(*args)
    return await result if inspect.isawaitable(result) else result


@group.command("register", "Register an appservice from its registration YAML",
               input_help="the registration YAML")
async def register(ctx: AdminContext, args: Args) -> str:
    if not args.input.strip():
        raise CommandError("Give the registration YAML in a code block below the command")
    appservice_id = await _call(ctx, "register", args.input)
    return f"Appservice `{appservice_id}` registered"


@group.command("unregister", "Unregister an appservice", Arg("appservice_id", "its id"))
async def unregister(ctx: AdminContext, args: Args) -> str:
    await _call(ctx, "unregister", args["appservice_id"])
    return f"Appservice `{args['appservice_id']}` unregistered"


@group.command("list", "List the registered appservices", aliases=("list-registered",))
async def list_appservices(ctx: AdminContext, args: Args) -> str:
    ids = list(await _call(ctx, "list"))
    return f"{len(ids)} appservice(s):\n\n" + bullet_list([f"`{i}`" for i in ids])


@group.command("show", "Show an appservice's registration",
               Arg("appservice_id", "its id"), aliases=("show-appservice-config",))
async def show(ctx: AdminContext, args: Args) -> str:
    text = await _call(ctx, "show", args["appservice_id"])
    if text is None:
        raise CommandError(f"No appservice `{args['appservice_id']}` is registered")
    return f"Registration of `{args['appservice_id']}`:\n\n" + code_block(str(text), "yaml")
