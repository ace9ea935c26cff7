"""``se-zoo push`` and ``se-zoo weights pin``: the Hub side."""
import argparse
from typing import Callable, Dict

from se_zoo.weights.pin import pin_entries
from se_zoo.hub.publish import push_folder

from ._help import HelpFormatter

__all__ = ['ARGUMENTS']


def _push(args: argparse.Namespace) -> int:
    commit = push_folder(args.folder, args.repo_id, revision=args.revision, commit_message=args.message,
                         private=args.private, manifest_tag=args.tag)
    print(commit)
    return 0


def _add_push(p: argparse.ArgumentParser) -> None:
    p.add_argument('folder', help='folder with model.safetensors, config.json and README.md')
    p.add_argument('repo_id', help='Hub repo, ORG/NAME (created if missing)')
    p.add_argument('--revision', default='main', help='branch to commit to')
    p.add_argument('--message', default=None, help='commit message')
    p.add_argument('--private', action='store_true', help='create the repo private')
    p.add_argument('--tag', default=None,
                   help='record the weight as ARCH.TAG in the weights manifest, pinned to the new commit')
    p.set_defaults(run=_push)


def _pin(args: argparse.Namespace) -> int:
    for name, entry in pin_entries(args.tags).items():
        where = f'{entry.hub_file[0]}@{entry.revision}' if entry.hub_file else entry.file_url
        print(f'{name}: {where} sha256 {entry.sha256}')
    return 0


def _add_weights(p: argparse.ArgumentParser) -> None:
    commands = p.add_subparsers(dest='weights_command', required=True, metavar='COMMAND')
    pin = commands.add_parser('pin', formatter_class=HelpFormatter,
                              help="record the sha256 (and the Hub's current commit) of manifest entries")
    pin.add_argument('tags', nargs='*', metavar='ARCH.TAG', help='entries to pin')
    pin.set_defaults(run=_pin)


ARGUMENTS: Dict[str, Callable[[argparse.ArgumentParser], None]] = {'push': _add_push, 'weights': _add_weights}
