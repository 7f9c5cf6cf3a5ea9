"""Shell completion scripts (bash, zsh, fish), generated from the command line's parser.

Generated, so a new command or flag completes the day it is added. Static: the script lists
the commands, each command's flags and their choices, and completes files where a command
takes a FILE or PATH, so pressing Tab never starts Python. (argcomplete calls the program on
every Tab; shtab knows no fish: a walk over the parser is a few dozen lines.)
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex

__all__ = ["Command", "commands_of", "script"]

_FILE_METAVARS = {"FILE", "PATH", "DIR", "FILE|RUN"}


@dataclasses.dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    choices: tuple[str, ...] = ()
    takes_value: bool = False


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: tuple[Option, ...]
    files: bool
    """Its positional arguments are files (else nothing to complete but flags)."""
    choices: tuple[str, ...] = ()
    """What its positional arguments may be, where they are a fixed list (`bash zsh fish`)."""
    actions: tuple[Command, ...] = ()
    """Sub-commands (`state migrate|export|import`)."""


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[
        argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _describe(parser: argparse.ArgumentParser, name: str, help_text: str) -> Command:
    options, files, choices = [], False, []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if not action.option_strings:
            files = files or str(action.metavar) in _FILE_METAVARS
            choices += [str(c) for c in action.choices or ()]
            continue
        options.append(Option(tuple(action.option_strings), (action.help or "").split(";")[0],
                              tuple(str(c) for c in action.choices or ()),
                              action.nargs != 0))
    sub = _subparsers(parser)
    actions = () if sub is None else tuple(
        _describe(p, n, _help_of(sub, n)) for n, p in sub.choices.items())
    return Command(name, help_text, tuple(options), files, tuple(choices), actions)


def _help_of(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str) -> str:
    for choice in sub._choices_actions:
        if choice.dest == name:
            return choice.help or ""
    return ""


def commands_of(parser: argparse.ArgumentParser) -> list[Command]:
    """Every command of `parser` with its flags."""
    sub = _subparsers(parser)
    assert sub is not None
    return [_describe(p, n, _help_of(sub, n)) for n, p in sub.choices.items()]


def _flags(command: Command) -> str:
    return " ".join(flag for option in command.options for flag in option.flags)


def _bash(prog: str, commands: list[Command], top: list[str]) -> str:
    func = f"_{prog.replace('-', '_')}_complete"
    lines = [
        f"# bash completion for {prog} (generated: {prog} completion bash)",
        f"{func}() {{",
        '    local cur prev cmd i',
        '    cur="${COMP_WORDS[COMP_CWORD]}"',
        '    prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    cmd=""',
        '    for ((i = 1; i < COMP_CWORD; i++)); do',
        '        case "${COMP_WORDS[i]}" in -*) ;; *) cmd="${COMP_WORDS[i]}"; break ;; esac',
        '    done',
        '    if [[ -z "$cmd" ]]; then',
        f'        COMPREPLY=($(compgen -W {shlex.quote(" ".join(c.name for c in commands))}'
        f' -- "$cur"))',
        f'        [[ "$cur" == -* ]] && COMPREPLY=($(compgen -W {shlex.quote(" ".join(top))}'
        ' -- "$cur"))',
        '        return',
        '    fi',
        '    case "$cmd" in',
    ]
    for command in commands:
        lines.append(f"    {command.name})")
        lines.append('        case "$prev" in')
        for option in command.options:
            if option.choices:
                lines.append(f"            {'|'.join(option.flags)}) COMPREPLY=($(compgen -W "
                             f"{shlex.quote(' '.join(option.choices))} -- \"$cur\")); return ;;")
        if lines[-1].endswith('case "$prev" in'):
            lines.pop()  # no flag of this command takes a fixed choice
        else:
            lines.append("        esac")
        words = " ".join([_flags(command), *command.choices,
                          *(a.name for a in command.actions)])
        lines.append(f'        COMPREPLY=($(compgen -W {shlex.quote(words.strip())} '
                     '-- "$cur"))')
        if command.files:
            lines.append('        [[ "$cur" != -* ]] && COMPREPLY+=($(compgen -f -- "$cur"))')
        lines.append("        ;;")
    lines += ["    esac", "}", f"complete -o filenames -F {func} {prog}", ""]
    return "\n".join(lines)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(prog: str, commands: list[Command]) -> str:
    names = " ".join(c.name for c in commands)
    lines = [f"# fish completion for {prog} (generated: {prog} completion fish)",
             f"complete -c {prog} -f",
             f"complete -c {prog} -l version -d 'print the version and exit'"]
    for command in commands:
        lines.append(f"complete -c {prog} -n 'not __fish_seen_subcommand_from {names}' "
                     f"-a {command.name} -d {_fish_quote(command.help)}")
    for command in commands:
        seen = f"-n '__fish_seen_subcommand_from {command.name}'"
        if command.files:
            lines.append(f"complete -c {prog} {seen} -F")
        for action in command.actions:
            lines.append(f"complete -c {prog} {seen} -a {action.name} "
                         f"-d {_fish_quote(action.help)}")
        if command.choices:
            lines.append(f"complete -c {prog} {seen} -a {_fish_quote(' '.join(command.choices))}")
        for option in command.options:
            parts = [f"complete -c {prog} {seen}"]
            for flag in option.flags:
                parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
            if option.choices:
                parts.append(f"-x -a {_fish_quote(' '.join(option.choices))}")
            elif option.takes_value:
                parts.append("-r")
            parts.append(f"-d {_fish_quote(option.help)}")
            lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of `parser`'s program for `shell` (bash, zsh or fish)."""
    prog = parser.prog
    commands = commands_of(parser)
    top = ["--help", "--version"]
    if shell == "fish":
        return _fish(prog, commands)
    bash = _bash(prog, commands, top)
    if shell == "zsh":  # zsh runs bash completions through its own bashcompinit
        return (f"# zsh completion for {prog} (generated: {prog} completion zsh)\n"
                "autoload -U +X bashcompinit && bashcompinit\n" + bash)
    return bash
