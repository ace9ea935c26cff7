"""``se-zoo inspect``: per-class mean SE excitations of a trained model."""
import argparse
from typing import Callable, Dict

from se_zoo.inspection import inspect_excitations

__all__ = ['ARGUMENTS']


def _inspect(args: argparse.Namespace) -> int:
    path = inspect_excitations(args.model, args.out, data=args.data, num_samples=args.samples, num_blocks=args.blocks)
    print(f'wrote {path}')
    return 0


def _add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument('model', help='a publish-ready folder (e.g. output/best), local-dir:PATH or hf-hub:ORG/NAME')
    p.add_argument('--data', default='fashion-mnist', help='the dataset the model was trained on')
    p.add_argument('--out', default='excitations.png', help='PNG to write')
    p.add_argument('--samples', type=int, default=2000, help='eval images to average over')
    p.add_argument('--blocks', type=int, default=6, help='SE blocks to plot, spread early to late')
    p.set_defaults(run=_inspect)


ARGUMENTS: Dict[str, Callable[[argparse.ArgumentParser], None]] = {'inspect': _add_inspect}
