"""The `tether` CLI's man page and bash/zsh completion scripts, written from its argparse parser (pure).

Written from the same parser `tether --help` prints, so the three never disagree with the installed CLI: a
command tree of (name, help, options, subcommands) is read from the parser and each output is a text rendering
of that tree. The man pages are written at package build time; the completions are kept in the checkout
(packaging/completions, part of every OS's payload: packaging/payload.py) and rewritten by

    python3 packaging/linux/shelldocs.py     # after a change to the CLI; a unit test says when it is due
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    usage: str
    description: str
    options: tuple[str, ...]
    subcommands: tuple[Command, ...] = field(default=())


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def command_tree(parser: argparse.ArgumentParser, name: str = "", help_text: str = "") -> Command:
    """The parser's commands, their options (long and short) and their subcommands, recursively."""
    options = tuple(opt for action in parser._actions for opt in action.option_strings)
    children: list[Command] = []
    sub = _subparsers(parser)
    if sub is not None:
        helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
        for child_name, child in sub.choices.items():
            children.append(command_tree(child, child_name, helps.get(child_name, "")))
    usage = " ".join(parser.format_usage().split())
    return Command(name, help_text, usage.removeprefix("usage: "), parser.description or "", options, tuple(children))


def _roff(text: str) -> str:
    """Text safe in a roff line: backslashes doubled, a leading dot or quote escaped, hyphens as minus signs
    in option names so that searching the page for "--socket" works."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + escaped if escaped.startswith((".", "'")) else escaped


def man_page(tree: Command, version: str, date: str) -> str:
    """tether(1): the synopsis, then one section per command path with its usage, description and options."""
    lines = [
        f'.TH TETHER 1 "{date}" "tether {version}" "User Commands"',
        ".SH NAME",
        "tether \\- " + _roff(tree.description or "Tether's command line"),
        ".SH SYNOPSIS",
        ".B tether",
        ".I COMMAND",
        "[\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff(tree.description),
        "Each command prints its own options with \\fB\\-\\-help\\fR.",
        ".SH COMMANDS",
    ]

    def walk(command: Command, path: str) -> None:
        lines.append(f".SS {_roff(path)}")
        if command.help:
            lines.append(_roff(command.help[0].upper() + command.help[1:] + "."))
        if command.description and command.description != command.help:
            lines.extend([".PP", _roff(command.description)])
        lines.extend([".PP", ".nf", _roff(command.usage), ".fi"])
        for child in command.subcommands:
            walk(child, f"{path} {child.name}")

    for command in tree.subcommands:
        walk(command, f"tether {command.name}")
    lines += [
        ".SH FILES",
        ".TP",
        ".I /run/tether/helper.sock",
        "The helper's socket; members of the \\fBtether\\fR group may use it.",
        ".SH SEE ALSO",
        "\\fBsystemctl\\fR(1): the helper runs as the \\fBtether\\-helper\\fR service.",
        "",
    ]
    return "\n".join(lines)


def _paths(tree: Command, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Command]]:
    found = [(prefix, tree)]
    for child in tree.subcommands:
        found += _paths(child, (*prefix, child.name))
    return found


def bash_completion(tree: Command) -> str:
    """A bash completion for `tether`: subcommand names, then each command's options."""
    cases = []
    for path, command in _paths(tree):
        words = [c.name for c in command.subcommands] + list(command.options)
        cases.append(f'        "{" ".join(path)}") words="{" ".join(words)}" ;;')
    return "\n".join(
        [
            "# bash completion for tether (generated from its argument parser) -*- shell-script -*-",
            "_tether() {",
            "    local cur path word words",
            '    cur="${COMP_WORDS[COMP_CWORD]}"',
            '    path=""',
            '    for word in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do',
            '        case "$word" in -*) ;; *) path="${path:+$path }$word" ;; esac',
            "    done",
            '    case "$path" in',
            *cases,
            '        *) words="" ;;',
            "    esac",
            '    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")',
            "}",
            "complete -o default -F _tether tether",
            "",
        ]
    )


def _zsh_quote(text: str) -> str:
    return text.replace("'", "'\\''").replace(":", "\\:").replace("[", "\\[").replace("]", "\\]")


def zsh_completion(tree: Command) -> str:
    """A zsh completion for `tether`: subcommands described by their help, then options."""
    cases = []
    for path, command in _paths(tree):
        entries = [f"'{_zsh_quote(c.name)}:{_zsh_quote(c.help)}'" for c in command.subcommands]
        options = " ".join(f"'{o}'" for o in command.options)
        cases.append(f'    "{" ".join(path)}") subs=({" ".join(entries)}); opts=({options}) ;;')
    return "\n".join(
        [
            "#compdef tether",
            "# zsh completion for tether (generated from its argument parser)",
            "local -a subs opts",
            "local path_=${(j: :)${(@)words[2,CURRENT-1]:#-*}}",
            "case $path_ in",
            *cases,
            "    *) subs=(); opts=() ;;",
            "esac",
            "if [[ $PREFIX == -* ]]; then",
            "    compadd -a opts",
            "elif (( ${#subs} )); then",
            "    _describe command subs",
            "else",
            "    _files",
            "fi",
            "",
        ]
    )


def tray_man_page(version: str, date: str) -> str:
    """tether-tray(1): the tray takes no options; the page says what it is and where its settings live."""
    return "\n".join(
        [
            f'.TH TETHER\\-TRAY 1 "{date}" "tether {version}" "User Commands"',
            ".SH NAME",
            "tether\\-tray \\- Tether's tray icon and menu",
            ".SH SYNOPSIS",
            ".B tether\\-tray",
            ".SH DESCRIPTION",
            "Shows Tether's state in the system tray and connects, disconnects and switches clusters from its menu.",
            "Start at login is turned on in its Settings dialog (an XDG autostart entry in the user's",
            "configuration); the package never turns it on by itself.",
            ".SH SEE ALSO",
            "\\fBtether\\fR(1)",
            "",
        ]
    )


def completions(tree: Command) -> dict[PurePosixPath, str]:
    """Every completion script by its path beneath packaging/completions (<shell>/<file>, as the payload has it)."""
    return {PurePosixPath("bash/tether"): bash_completion(tree), PurePosixPath("zsh/_tether"): zsh_completion(tree)}


def main() -> int:
    from tether.helper.user.cli.main import build_parser

    folder = Path(__file__).resolve().parents[1] / "completions"
    for path, text in completions(command_tree(build_parser())).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
        print(f"wrote {folder / path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
