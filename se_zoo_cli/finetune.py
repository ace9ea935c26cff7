"""``se-zoo finetune``: the command line of ``se_zoo.finetune``."""
import argparse
import ast
import dataclasses
from typing import Callable, Dict

from se_zoo.finetune import FinetuneConfig, finetune

__all__ = ['ARGUMENTS']


def _finetune(args: argparse.Namespace) -> int:
    # Only the options given on the command line: a resumed run takes the rest from its checkpoint.
    options = {k: v for k, v in vars(args).items() if k not in ('command', 'run', 'no_progress')}
    for name in ('model_kwargs', 'se_kwargs'):
        if name in options:
            options[name] = dict(options[name])
    if getattr(args, 'no_progress', False):
        options['progress'] = False
    result = finetune(**options)
    if result.rank == 0:
        best = result.history[result.best_epoch]
        epochs = len(result.history)
        print(f'{result.eval_split} accuracy: {result.final_accuracy:.2f}% after {epochs} epoch{"s" if epochs != 1 else ""} '
              f'(best {best.eval_accuracy:.2f}% at epoch {result.best_epoch + 1}, {best.eval_samples} images); '
              f'publish-ready weights: {result.best_dir}')
        if result.unreadable:
            paths = sorted(result.unreadable)
            print(f'skipped {len(paths)} unreadable image{"s" if len(paths) != 1 else ""}: {", ".join(paths[:3])}'
                  + (f' and {len(paths) - 3} more (training_state.json lists them all)' if len(paths) > 3 else ''))
    return 0


def _keyword(text: str) -> tuple:
    """``KEY=VALUE`` with VALUE a Python literal (a bare word stays a string), for --model-kwargs/--se-kwargs."""
    key, sep, value = text.partition('=')
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f'{text!r} is not KEY=VALUE')
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        if value[:1] in '([{\'"-.0123456789':  # meant as a literal, but not one: a bare word stays a string
            raise argparse.ArgumentTypeError(f'{text!r}: {value!r} is not a Python literal') from None
        return key, value


def _recipe_defaults(parser: argparse.ArgumentParser) -> None:
    """Leave every finetune option out of the namespace unless given, and show ``FinetuneConfig``'s default.

    The command line never restates a default, and ``finetune`` can tell the options a user gave (checked
    against a checkpoint on ``--resume``) from the ones it should take from the recipe.
    """
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                for f in dataclasses.fields(FinetuneConfig)}
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        if action.dest in defaults or action.dest == 'no_progress':
            value = defaults.get(action.dest)
            if value not in (None, False, {}, '') and action.dest != 'model':
                shown = ' '.join(map(str, value)) if isinstance(value, tuple) else value
                action.help = f'{action.help or ""} (default: {shown})'.strip()
            action.default = argparse.SUPPRESS


def _add_finetune(p: argparse.ArgumentParser) -> None:
    p.description = ('Fine-tune any se_zoo or timm model. Run under `torchrun --nproc-per-node N -m se_zoo_cli` '
                     'for data-parallel training; --batch-size is per process.')
    p.add_argument('model', nargs='?', help='a model name (se_resnet18, any timm model), a tag (se-zoo list --pretrained), '
                                  'hf-hub:ORG/NAME or a folder (local-dir:PATH)')
    p.add_argument('--data',
                   help="'fashion-mnist' (apt-get install dataset-fashion-mnist) or an ImageFolder root with train/ "
                        "and val/")
    p.add_argument('--output', help='checkpoint directory (best/, last/)')
    start = p.add_mutually_exclusive_group()
    start.add_argument('--pretrained', action='store_true', help="start from the model's published weights")
    start.add_argument('--init', metavar='PATH', help='start from a local .safetensors file or publish-ready folder')
    p.add_argument('--model-kwargs', nargs='*', type=_keyword, metavar='KEY=VALUE',
                   help="architecture keywords, e.g. channels='(32,64,128,256)' stem_width=32")
    p.add_argument('--add-se', action='store_true', help='retrofit SE blocks (se_zoo.add_se) before training')
    p.add_argument('--se-kwargs', nargs='*', type=_keyword, metavar='KEY=VALUE',
                   help='SE keywords for --add-se, e.g. r=8 gate=hard_sigmoid')
    p.add_argument('--img-size', type=int, help="input resolution (default: the model's)")
    p.add_argument('--epochs', type=int)
    p.add_argument('--batch-size', type=int, help='per process')
    p.add_argument('--opt', help='timm optimizer name')
    p.add_argument('--lr', type=float)
    p.add_argument('--weight-decay', type=float)
    p.add_argument('--momentum', type=float)
    p.add_argument('--sched', help='timm scheduler name')
    p.add_argument('--warmup-epochs', type=int)
    p.add_argument('--min-lr', type=float)
    p.add_argument('--scale', type=float, nargs=2, metavar=('MIN', 'MAX'),
                   help='random-resized-crop area range')
    p.add_argument('--hflip', type=float)
    p.add_argument('--color-jitter', type=float)
    p.add_argument('--auto-augment', help="timm auto-augment policy, e.g. 'rand-m9-mstd0.5'")
    p.add_argument('--re-prob', type=float, help='random erasing probability')
    p.add_argument('--mixup', type=float, help='mixup alpha (timm.data.Mixup)')
    p.add_argument('--cutmix', type=float, help='cutmix alpha')
    p.add_argument('--smoothing', type=float, help='label smoothing')
    p.add_argument('--train-samples', type=int, help='train on a subset of this size')
    p.add_argument('--eval-samples', type=int, help='evaluate on a subset of this size')
    p.add_argument('--workers', type=int, help='data-loading processes per training process')
    p.add_argument('--max-unreadable', type=float, metavar='SHARE',
                   help='stop once more than this share of the images is unreadable (each one met is skipped and '
                        'named)')
    p.add_argument('--check-images', action='store_true',
                   help='decode every image before training, in --workers processes, to find unreadable ones up front')
    p.add_argument('--seed', type=int)
    p.add_argument('--device', help='cpu, cuda, ... (default: cuda if available)')
    p.add_argument('--resume', action='store_true', help='continue the run checkpointed in --output')
    p.add_argument('--overwrite', action='store_true', help='start afresh, replacing a checkpoint in --output')
    p.add_argument('--no-progress', action='store_true', help='no progress bar or per-epoch lines')
    _recipe_defaults(p)
    p.set_defaults(run=_finetune)


ARGUMENTS: Dict[str, Callable[[argparse.ArgumentParser], None]] = {'finetune': _add_finetune}
