"""A small argparse-like command tree: groups of commands, each with ``--help``.

argparse itself prints and exits on errors and formats help for terminals; in the
admin room every outcome must become a reply, so the parser here raises
:class:`CommandError` with the text to answer instead.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .context import AdminContext

PREFIX = "!admin"
HELP_FLAGS = ("-h", "--help")


class CommandError(Exception):
    """A command cannot run or failed; the message is the reply (markdown)."""


@attrs.frozen
class Arg:
    """A positional argument (``<name>``), or with ``flag`` a ``--name`` switch, or with
    ``option`` a ``--name VALUE``; ``rest`` takes every remaining word."""

    name: str
    help: str
    optional: bool = False
    flag: bool = False
    option: bool = False
    rest: bool = False

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    def usage(self) -> str:
        if self.flag:
            return f"[--{self.name}]"
        if self.option:
            return f"[--{self.name} <{self.key}>]"
        shown = f"<{self.name}{'...' if self.rest else ''}>"
        return f"[{shown[1:-1]}]" if self.optional else shown


@attrs.frozen
class Args:
    """Parsed arguments, plus the lines after the command line (``input``)."""

    values: dict[str, Any]
    input: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.values.get(key)
        return default if value is None else value

    def input_lines(self) -> list[str]:
        """Non-empty lines of the input (code block lists of users, rooms, MXCs...)."""
        return [line.strip() for line in self.input.splitlines() if line.strip()]


Handler = Callable[["AdminContext", Args], Awaitable[str]]


@attrs.define
class Command:
    name: str
    help: str
    handler: Handler
    args: Sequence[Arg] = ()
    aliases: Sequence[str] = ()
    input_help: str | None = None  # what the code block below the command holds
    path: str = ""

    def usage(self) -> str:
        words = [PREFIX, self.path, *(a.usage() for a in self.args if not (a.flag or a.option))]
        words += [a.usage() for a in self.args if a.flag or a.option]
        return " ".join(words)

    def help_text(self) -> str:
        lines = [f"**{self.path}**: {self.help}", "", f"Usage: `{self.usage()}`"]
        if self.aliases:
            lines.append("Aliases: " + ", ".join(f"`{a}`" for a in self.aliases))
        if self.input_help:
            lines += ["", f"Input (a code block on the following lines): {self.input_help}"]
        positionals = [a for a in self.args if not (a.flag or a.option)]
        options = [a for a in self.args if a.flag or a.option]
        if positionals:
            lines += ["", "Arguments:"]
            lines += [f"- `{a.usage()}`: {a.help}" for a in positionals]
        lines += ["", "Options:", "- `-h, --help`: show this help"]
        lines += [f"- `{a.usage()[1:-1]}`: {a.help}" for a in options]
        return "\n".join(lines)

    def parse(self, words: list[str], text_input: str) -> Args:
        values: dict[str, Any] = {a.key: False if a.flag else None for a in self.args}
        positionals = [a for a in self.args if not (a.flag or a.option)]
        by_name = {a.name: a for a in self.args if a.flag or a.option}
        index = 0
        i = 0
        while i < len(words):
            word = words[i]
            if word.startswith("--") and len(word) > 2 and not _takes_rest(positionals, index):
                name, eq, value = word[2:].partition("=")
                arg = by_name.get(name)
                if arg is None:
                    raise CommandError(f"Unknown option `--{name}` for `{self.path}`.\n\n"
                                       f"Usage: `{self.usage()}`")
                if arg.flag:
                    if eq:
                        raise CommandError(f"`--{name}` takes no value")
                    values[arg.key] = True
                else:
                    if not eq:
                        i += 1
                        if i >= len(words):
                            raise CommandError(f"`--{name}` needs a value")
                        value = words[i]
                    values[arg.key] = value
                i += 1
                continue
            if index >= len(positionals):
                raise CommandError(f"Unexpected argument `{word}` for `{self.path}`.\n\n"
                                   f"Usage: `{self.usage()}`")
            arg = positionals[index]
            if arg.rest:
                values[arg.key] = " ".join(words[i:])
                break
            values[arg.key] = word
            index += 1
            i += 1
        missing = [a for a in positionals if not a.optional and values[a.key] is None]
        if missing:
            raise CommandError(f"Missing argument `<{missing[0].name}>` for `{self.path}`.\n\n"
                               f"Usage: `{self.usage()}`")
        return Args(values, text_input)


def _takes_rest(positionals: list[Arg], index: int) -> bool:
    return index < len(positionals) and positionals[index].rest


@attrs.define
class Group:
    name: str
    help: str
    children: list[Command | Group] = attrs.field(factory=list)
    path: str = ""

    def command(self, name: str, help: str, *args: Arg, aliases: Sequence[str] = (),
                input_help: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: register ``handler`` as the command ``name`` of this group."""

        def register(handler: Handler) -> Handler:
            self.children.append(Command(name, help, handler, args, aliases, input_help))
            return handler

        return register

    def group(self, name: str, help: str) -> Group:
        child = Group(name, help)
        self.children.append(child)
        return child

    def add(self, child: Command | Group) -> None:
        self.children.append(child)

    def find(self, word: str) -> Command | Group | None:
        for child in self.children:
            if child.name == word or (isinstance(child, Command) and word in child.aliases):
                return child
        return None

    def finish(self, parent_path: str = "") -> None:
        """Give every node its full path (``rooms moderation ban-room``)."""
        self.path = f"{parent_path} {self.name}".strip()
        for child in self.children:
            if isinstance(child, Group):
                child.finish(self.path)
            else:
                child.path = f"{self.path} {child.name}".strip()

    def help_text(self) -> str:
        title = f"**{self.path}**: {self.help}" if self.path else self.help
        lines = [title, "", f"Usage: `{PREFIX} {self.path} <command> [--help]`".replace("  ", " "),
                 "", "Commands:"]
        for child in self.children:
            marker = " (group)" if isinstance(child, Group) else ""
            lines.append(f"- `{child.name}`{marker}: {child.help}")
        return "\n".join(lines)

    def resolve(self, words: list[str]) -> tuple[Command | Group, list[str]]:
        """Walk the words down the tree: the node reached and the words left for it."""
        node: Command | Group = self
        rest = list(words)
        while isinstance(node, Group) and rest:
            word = rest[0]
            if word in HELP_FLAGS or word == "help":
                return node, rest
            child = node.find(word)
            if child is None:
                where = f" in `{node.path}`" if node.path else ""
                names = ", ".join(f"`{c.name}`" for c in node.children)
                raise CommandError(f"Unknown command `{word}`{where}. Available: {names}.\n\n"
                                   f"Use `{PREFIX} {node.path} --help`".replace("  ", " ")
                                   + " for help.")
            node, rest = child, rest[1:]
        return node, rest


def split_words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise CommandError(f"Cannot read the command line: {exc}") from None
