"""The admin-room command tree and the ``admin/commands`` job that runs it.

``services/admin_room.py`` decides what is a command and queues it; this package
parses it (``tree``), runs it (``commands/``, one module per group) and answers
with markdown and HTML (``render``). A command that fails answers with its error;
nothing a command does can end the job.
"""

from __future__ import annotations

import logging

from conduwuit.errors import MatrixError
from conduwuit.services.admin_room import AdminCommand, AdminRoom

from .commands import ROOT
from .context import AdminContext
from .render import command_input, render
from .tree import HELP_FLAGS, PREFIX, Command, CommandError, split_words

__all__ = ["ROOT", "AdminContext", "execute", "execute_and_follow_up", "run"]

log = logging.getLogger(__name__)

REFUSAL = "Only server admins may run admin commands."


async def run(service: AdminRoom, context: AdminContext) -> None:
    """The ``admin/commands`` job: one command at a time, in the order they were sent."""
    while True:
        command = await service.next_command()
        await handle(service, context, command)


async def handle(service: AdminRoom, context: AdminContext, command: AdminCommand) -> None:
    if command.allowed:
        log.info("admin command from %s: %s", command.sender,
                 command.text.splitlines()[0] if command.text else "")
        answer = await execute(context, command.text)
    else:
        log.warning("admin command from non-admin %s not run", command.sender)
        answer = REFUSAL
    body, formatted = render(answer)
    try:
        await service.reply(command, body, formatted)
    except Exception:  # the job must outlive a reply that cannot be sent
        log.exception("could not send the admin reply to %s", command.event_id)
    _follow_up(context)


def _follow_up(context: AdminContext) -> None:
    """What a command left to do once it answered (shutdown, restart)."""
    while context.after_reply:
        action = context.after_reply.pop(0)
        try:
            action()
        except Exception:
            log.exception("admin follow-up action failed")


async def execute_and_follow_up(context: AdminContext, text: str) -> str:
    """For ``admin_execute`` and ``admin_signal_execute``: run, then any follow-up."""
    answer = await execute(context, text)
    _follow_up(context)
    return answer


async def execute(context: AdminContext, text: str) -> str:
    """Run one command (its line, then input lines); returns the markdown reply."""
    lines = text.splitlines()
    try:
        words = split_words(lines[0]) if lines else []
        node, rest = ROOT.resolve(words)
        if not isinstance(node, Command) or any(word in HELP_FLAGS for word in rest) \
                or (rest[:1] == ["help"] and not node.args):
            return node.help_text()
        args = node.parse(rest, command_input(lines[1:]))
        return await node.handler(context, args)
    except CommandError as error:
        return f"**Error**: {error}"
    except MatrixError as error:
        return f"**Error**: {error.error} (`{error.errcode}`)"
    except Exception as error:
        log.exception("admin command failed: %s", lines[0] if lines else "")
        return (f"**Error**: the command failed unexpectedly: `{type(error).__name__}: "
                f"{error}`. See the server log; `{PREFIX} --help` lists the commands.")
