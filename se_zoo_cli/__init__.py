"""The ``se-zoo`` command line.

It is a package of its own, beside ``se_zoo`` rather than inside it, so that it can start without torch:
``import se_zoo`` registers the models in timm and so imports torch (seconds), and Python runs a package's
``__init__`` before any of its submodules. This module imports neither. Each command lives in a module that
imports the parts of se_zoo it runs; ``main`` imports only the module of the command given (as pip does with
its commands), so ``se-zoo --help`` and ``se-zoo --version`` return at once and ``se-zoo list`` pays for the
model registry, not for ONNX Runtime.
"""
import argparse
import difflib
import importlib
import importlib.metadata
import os
import sys
from typing import Any, List, NamedTuple, Optional, Sequence

from ._help import HelpFormatter

__all__ = ['COMMANDS', 'build_parser', 'main']


class Command(NamedTuple):
    module: str  # defines ARGUMENTS[name]; imported only when the command is given, as it imports se_zoo
    summary: str


COMMANDS = {
    'list': Command('se_zoo_cli.models', 'list se_zoo models, or with --pretrained their weights'),
    'info': Command('se_zoo_cli.models', 'params, GMACs, SE share and feature maps of a model'),
    'finetune': Command('se_zoo_cli.finetune', 'fine-tune a model on an ImageFolder directory or Fashion-MNIST'),
    'inspect': Command('se_zoo_cli.inspection', "plot per-class mean SE excitations per stage (the paper's Fig. 6)"),
    'convert': Command('se_zoo_cli.convert', 'convert a timm / torchvision / senet.pytorch checkpoint into se_zoo weights'),
    'push': Command('se_zoo_cli.hub', 'publish a folder written by se_zoo.hub.publish.save_folder or se-zoo finetune '
                                      'to the Hugging Face Hub'),
    'weights': Command('se_zoo_cli.hub', 'maintain the weights manifest'),
    'export': Command('se_zoo_cli.deploy', 'export a model to ONNX (optionally int8), checked against PyTorch'),
    'predict': Command('se_zoo_cli.deploy', 'top-5 classes of images with an exported model'),
}


class _Version(argparse.Action):
    """``--version``, read from the installed distribution's metadata so that it needs no import of se_zoo."""

    def __init__(self, option_strings: List[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show se_zoo's version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: Optional[str] = None) -> None:
        try:
            version = importlib.metadata.version('se-zoo')
        except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
            version = importlib.import_module('se_zoo.version').__version__
        print(f'{parser.prog} {version}')  # on stdout, as argparse's own version action prints
        parser.exit()


def _command_of(argv: Sequence[str]) -> Optional[str]:
    """The command ``argv`` runs: its first word that is not an option (the top level's options take no value)."""
    return next((arg for arg in argv if not arg.startswith('-')), None)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``se-zoo`` argument parser, with the arguments of ``command`` (None: the command list only)."""
    parser = argparse.ArgumentParser(prog='se-zoo', description='Squeeze-and-Excitation networks for timm.')
    parser.add_argument('--version', action=_Version)
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, (module, summary) in COMMANDS.items():
        p = sub.add_parser(name, formatter_class=HelpFormatter, help=summary)
        if name == command:
            importlib.import_module(module).ARGUMENTS[name](p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``se-zoo``; errors a user can act on are printed without a traceback and exit with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    if command is not None and command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=3)
        hint = f'; did you mean {" or ".join(close)}?' if close else f'; the commands are {", ".join(COMMANDS)}'
        build_parser().error(f'unknown command {command!r}{hint}')
    args = build_parser(command).parse_args(argv)
    # The command's module has imported se_zoo by now, so this costs nothing; at the top of this module it
    # would load torch for --help.
    from se_zoo.errors import SEZooError
    try:
        return args.run(args)
    except SEZooError as e:  # anything else is a bug, and keeps its traceback
        print(f'se-zoo {args.command}: error: {e}', file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`se-zoo list --pretrained | head`): stop quietly, and point stdout at devnull so
        # that the interpreter's final flush does not raise again (Python's documented recipe, `signal` docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
