"""The ``se-zoo`` command line. Each subcommand parses its arguments here and delegates to its module.

Subcommands import what they run inside their handler, so each pays only for what it uses at start-up. (The
package root itself imports timm, and so torch: ``import se_zoo`` registers the models.)
"""
import argparse
import dataclasses
import sys
from typing import List, Optional

from ..errors import SEZooError
from ..finetune.config import FinetuneConfig
from ..version import __version__
from . import deploy
from ._help import HelpFormatter


def _list(args: argparse.Namespace) -> int:
    from ..hub.manifest import is_pinned, load_manifest
    from ..models import list_models
    names = list_models(args.filter, pretrained=args.pretrained)
    if not args.pretrained:
        print('\n'.join(names))
        return 0
    if not names:
        print(f'no pretrained weights match {args.filter!r}' if args.filter else 'no pretrained weights are listed')
        return 0
    manifest = load_manifest()
    rows = [('tag', 'source', 'kind', 'top-1', 'licence', 'pinned')]
    for name in names:
        entry = manifest.get(name, {})
        top1 = (entry.get('metrics') or {}).get('top1')
        kind = entry.get('kind', 'se_zoo') + (' (SE untrained)' if entry.get('kind') == 'retrofit' else '')
        rows.append((name + (' *' if entry.get('default') else ''), entry.get('source', ''), kind,
                     f'{top1:.2f}' if top1 is not None else '-', entry.get('license', ''),
                     'yes' if is_pinned(entry) else 'no'))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        print('  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print('* the default tag of its architecture; unpinned weights are checked against the sha256 the Hub reports')
    return 0


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('list', formatter_class=HelpFormatter, help='list se_zoo models, or with --pretrained their weights')
    p.add_argument('filter', nargs='?', default='', help="wildcard filter, e.g. 'se_resnet*'")
    p.add_argument('--pretrained', action='store_true',
                   help='list the arch.tag weights: source, kind, top-1, licence, pinned or not')
    p.set_defaults(run=_list)


def _pin(args: argparse.Namespace) -> int:
    from ..hub.pin import pin_entries
    for name, entry in pin_entries(args.tags).items():
        print(f'{name}: {entry["repo_id"]}@{entry["revision"]} sha256 {entry["sha256"]}')
    return 0


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('weights', formatter_class=HelpFormatter, help='maintain the weights manifest')
    commands = p.add_subparsers(dest='weights_command', required=True, metavar='COMMAND')
    pin = commands.add_parser('pin', formatter_class=HelpFormatter, help="record the Hub's current commit and sha256 of manifest entries")
    pin.add_argument('tags', nargs='*', metavar='ARCH.TAG', help='entries to pin')
    pin.set_defaults(run=_pin)


def _info(args: argparse.Namespace) -> int:
    from ..profile import profile_model
    prof = profile_model(args.name)
    c, h, w = prof.input_size
    print(f'{prof.name}  (input {c}x{h}x{w})')
    print(f'  params        {prof.params / 1e6:.3f} M   SE share {100 * prof.se_param_share:.2f}%')
    print(f'  GMACs         {prof.gmacs:.3f}     SE share {100 * prof.se_flop_share:.3f}%')
    print(f'  weights       {"listed (se-zoo list --pretrained)" if prof.has_weights else "none listed"}')
    print('  features      ' + '  '.join(f'{f["module"]}: {f["num_chs"]}ch /{f["reduction"]}' for f in prof.features))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('info', formatter_class=HelpFormatter, help='params, GMACs, SE share and feature maps of a model')
    p.add_argument('name', help='model name, e.g. se_resnet50')
    p.set_defaults(run=_info)


def _push(args: argparse.Namespace) -> int:
    from ..hub.publish import push_folder
    commit = push_folder(args.folder, args.repo_id, revision=args.revision, commit_message=args.message,
                         private=args.private, manifest_tag=args.tag)
    print(commit)
    return 0


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('push', formatter_class=HelpFormatter, help='publish a folder written by se_zoo.hub.publish.save_folder or se-zoo finetune to the Hugging Face Hub')
    p.add_argument('folder', help='folder with model.safetensors, config.json and README.md')
    p.add_argument('repo_id', help='Hub repo, ORG/NAME (created if missing)')
    p.add_argument('--revision', default='main', help='branch to commit to')
    p.add_argument('--message', default=None, help='commit message')
    p.add_argument('--private', action='store_true', help='create the repo private')
    p.add_argument('--tag', default=None,
                   help='record the weight as ARCH.TAG in the weights manifest, pinned to the new commit')
    p.set_defaults(run=_push)


def _convert(args: argparse.Namespace) -> int:
    from ..convert import convert
    result = convert(args.source, args.to, args.out, source_format=args.source_format,
                     allow_pickle=args.allow_pickle, license=args.license, push=args.push)
    diff = 'not measured' if result.max_abs_logit_diff is None else f'{result.max_abs_logit_diff:.3g}'
    print(f'{result.source} -> {args.to}: {result.folder}  (max abs logit diff {diff})')
    if result.commit:
        print(f'pushed to {args.push} @ {result.commit}')
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('convert', formatter_class=HelpFormatter, help='convert a timm / torchvision / senet.pytorch checkpoint into se_zoo weights')
    p.add_argument('--source', required=True,
                   help='checkpoint file, timm name.tag (seresnet50.ra2_in1k) or torchvision name.WEIGHTS '
                        '(mobilenet_v3_large.IMAGENET1K_V2); prefix timm: / torchvision: to be explicit')
    p.add_argument('--to', required=True, metavar='ARCH.TAG', help='the se_zoo weight to create, e.g. se_resnet50.tv_in1k')
    p.add_argument('--out', required=True, metavar='DIR', help='folder to write (must not exist or be empty)')
    p.add_argument('--push', metavar='REPO', default=None, help='publish the folder to this Hub repo')
    p.add_argument('--source-format', default=None, metavar='{timm,torchvision,senet}',
                   help="checkpoint layout (default: detected from the checkpoint's keys)")
    p.add_argument('--allow-pickle', action='store_true',
                   help='read a pickle checkpoint (.pth/.pt/.bin) with torch.load(weights_only=True)')
    p.add_argument('--license', default=None, help="the weights' licence for the model card (default: the source's)")
    p.set_defaults(run=_convert)


def _finetune(args: argparse.Namespace) -> int:
    from ..finetune import finetune
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
    return 0


def _keyword(text: str) -> tuple:
    """``KEY=VALUE`` with VALUE a Python literal (a bare word stays a string), for --model-kwargs/--se-kwargs."""
    import ast
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


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('finetune', formatter_class=HelpFormatter, help='fine-tune a model on an ImageFolder directory or Fashion-MNIST',
                       description='Fine-tune any se_zoo or timm model. Run under `torchrun --nproc-per-node N` '
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
    p.add_argument('--seed', type=int)
    p.add_argument('--device', help='cpu, cuda, ... (default: cuda if available)')
    p.add_argument('--resume', action='store_true', help='continue the run checkpointed in --output')
    p.add_argument('--overwrite', action='store_true', help='start afresh, replacing a checkpoint in --output')
    p.add_argument('--no-progress', action='store_true', help='no progress bar or per-epoch lines')
    _recipe_defaults(p)
    p.set_defaults(run=_finetune)


def _inspect(args: argparse.Namespace) -> int:
    from ..inspection import inspect_excitations
    path = inspect_excitations(args.model, args.out, data=args.data, num_samples=args.samples, num_blocks=args.blocks)
    print(f'wrote {path}')
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('inspect', formatter_class=HelpFormatter, help="plot per-class mean SE excitations per stage (the paper's Fig. 6)")
    p.add_argument('model', help='a publish-ready folder (e.g. output/best), local-dir:PATH or hf-hub:ORG/NAME')
    p.add_argument('--data', default='fashion-mnist', help='the dataset the model was trained on')
    p.add_argument('--out', default='excitations.png', help='PNG to write')
    p.add_argument('--samples', type=int, default=2000, help='eval images to average over')
    p.add_argument('--blocks', type=int, default=6, help='SE blocks to plot, spread early to late')
    p.set_defaults(run=_inspect)


def build_parser() -> argparse.ArgumentParser:
    """The ``se-zoo`` argument parser."""
    parser = argparse.ArgumentParser(prog='se-zoo', description='Squeeze-and-Excitation networks for timm.')
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for add in (_add_list, _add_info, _add_push, _add_convert, _add_finetune, _add_inspect, _add_weights,
                deploy.add_commands):
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``se-zoo``; errors a user can act on are printed without a traceback and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SEZooError as e:  # anything else is a bug, and keeps its traceback
        print(f'se-zoo {args.command}: error: {e}', file=sys.stderr)
        return 2

