"""The ``osep-nas`` command line.

Subcommands are plugins found through the ``osep_nas.commands`` entry-point group
(declared in setup.cfg), so ``search_spaces`` and ``strategies`` can add commands
without ``osep_nas`` importing them.  Each plugin module defines::

    HELP: str                                  # one line for ``osep-nas --help``
    def add_arguments(parser) -> None          # fill its argparse parser
    def run(args) -> int | None                # do the work

Bad input raised as ``ValueError``/``FileNotFoundError`` (or ``UsageError``) ends
with one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Sequence

from osep_nas.plugins import load_plugin, plugin_table

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the user; the CLI prints its message as one line and exits 2."""


#: spellings users reach for, and the option this command line uses instead
_OPTION_ALIASES = {"--dataset": "--data", "--data-dir": "--data", "--data-root": "--data", "--root": "--data",
                   "--dir": "--data", "--output": "--out", "--output-dir": "--out", "--out-dir": "--out",
                   "--outdir": "--out", "--cfg": "--config", "--arch": "--genotype", "--ckpt": "--checkpoint",
                   "--epoch": "--epochs", "--override": "--set"}


def suggest_option(parser: argparse.ArgumentParser, token: str) -> Optional[str]:
    """The option of ``parser`` the user probably meant by ``token`` (``--dataset`` where
    only ``--data`` exists, ``--epoch`` for ``--epochs``), or None."""
    import difflib

    known = [o for o in parser._option_string_actions if o.startswith("--")]
    word = token.split("=", 1)[0]
    if _OPTION_ALIASES.get(word) in known:
        return _OPTION_ALIASES[word]
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.7)
    return close[0] if close else None


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line on stderr (exit 2), no usage dump;
    a wrong option is answered with the right one (``did you mean --data?``)."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined]
        hint = ""
        if message.startswith("argument --dataset: invalid choice") and "--data" in self._option_string_actions:
            hint = "; the data itself (digits or a folder) goes to --data digits|DIR"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{hint} (see --help)\n")

    def unrecognized(self, extras: Sequence[str]) -> "NoReturn":  # type: ignore[name-defined]
        """Exit 2 naming the unknown arguments and, for an option, the one meant."""
        message = f"unrecognized arguments: {' '.join(extras)}"
        for token in extras:
            if token.startswith("--"):
                right = suggest_option(self, token)
                if right:
                    metavar = self._option_string_actions[right].metavar
                    message += f"; did you mean {right}{' ' + metavar if isinstance(metavar, str) else ''}?"
                break
        self.error(message)


#: options whose value may name a file the command reads
_INPUT_FILE_OPTIONS = ("--check", "--genotype", "--config", "--checkpoint", "--params", "--experiment", "--data")


def _refuse_special_inputs(argv: Sequence[str]) -> None:
    """Refuse a device, pipe or socket given as an input file (``--check /dev/urandom``,
    ``--genotype /dev/zero``, a study file) before the command imports torch: the same
    one-line error the command's bounded reader (:mod:`osep_nas.io`) gives, in a
    fraction of a second.  Regular files and folders are left to the command."""
    from osep_nas.io import refuse_special_file

    after_option = True  # argv[0] is the command name
    for i, token in enumerate(argv):
        option, eq, value = token.partition("=")
        if token.startswith("-"):
            if option in _INPUT_FILE_OPTIONS:
                if eq:
                    refuse_special_file(value, option)
                elif i + 1 < len(argv):
                    refuse_special_file(argv[i + 1], option)
            after_option = not eq and token != "--"
            continue
        if not after_option:  # a positional argument (the study file)
            refuse_special_file(token, "input file")
        after_option = False


def _command_table() -> Dict[str, str]:
    """name -> module of every subcommand: setup.cfg's ``osep_nas.commands`` group is the one
    table (:func:`osep_nas.plugins.plugin_table`)."""
    return plugin_table("osep_nas.commands")


def build_parser(commands: Optional[Dict[str, str]] = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per available command."""
    parser = OneLineArgumentParser(
        prog="osep-nas",
        description="Optimized separable convolution (osep) for neural architecture search: "
        "plan osep layers, search osep cell spaces for accuracy and #Params at once, "
        "retrain and evaluate the cells found.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    for name, module_path in sorted((commands or _command_table()).items()):
        module = load_plugin(module_path)
        if module is None:
            continue
        help_line = getattr(module, "HELP", "")
        sp = sub.add_parser(name, help=help_line, description=getattr(module, "DESCRIPTION", help_line),
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run, _name=name, _parser=sp)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``osep-nas`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the chosen command (importing NNI for `plan` would cost seconds).
    table = _command_table()
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen in table:
        try:  # before the command's module (and torch) is imported
            _refuse_special_inputs(argv[argv.index(chosen):])
        except ValueError as exc:
            print(f"osep-nas {chosen}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        parser = build_parser({chosen: table[chosen]})
    else:
        parser = build_parser(table)
    args, extras = parser.parse_known_args(argv)
    if extras:
        getattr(args, "_parser", parser).unrecognized(extras)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from osep_nas.allocator import keep_freed_memory

    keep_freed_memory()  # before the command allocates: see osep_nas.allocator
    try:
        rc = args._run(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        print(f"osep-nas {args._name}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as exc:
        print(f"osep-nas {args._name}: error: out of memory: {_one_line(exc) or 'the sizes given are too large'}",
              file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        text = str(exc).lower()
        if "can't allocate memory" not in text and "out of memory" not in text:
            raise
        print(f"osep-nas {args._name}: error: out of memory: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"osep-nas {args._name}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def run_main() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())


if __name__ == "__main__":  # python -m osep_nas.cli (used under torchrun)
    sys.exit(main())
