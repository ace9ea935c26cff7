"""The ``se-zoo`` command line. Each subcommand parses its arguments here and delegates to its module."""
import argparse
import sys
from typing import List, Optional


def _list(args: argparse.Namespace) -> int:
    from . import list_models
    for name in list_models(args.filter, pretrained=args.pretrained):
        print(name)
    return 0


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('list', help='list se_zoo models')
    p.add_argument('filter', nargs='?', default='', help="wildcard filter, e.g. 'se_resnet*'")
    p.add_argument('--pretrained', action='store_true', help='list arch.tag names with published weights')
    p.set_defaults(run=_list)


def _info(args: argparse.Namespace) -> int:
    from .profile import profile_model
    prof = profile_model(args.name)
    c, h, w = prof.input_size
    print(f'{prof.name}  (input {c}x{h}x{w})')
    print(f'  params        {prof.params / 1e6:.3f} M   SE share {100 * prof.se_param_share:.2f}%')
    print(f'  GMACs         {prof.gmacs:.3f}     SE share {100 * prof.se_flop_share:.3f}%')
    print(f'  weights       {"published" if prof.has_weights else "none published"}')
    print('  features      ' + '  '.join(f'{f["module"]}: {f["num_chs"]}ch /{f["reduction"]}' for f in prof.features))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('info', help='params, GMACs, SE share and feature maps of a model')
    p.add_argument('name', help='model name, e.g. se_resnet50')
    p.set_defaults(run=_info)


def _push(args: argparse.Namespace) -> int:
    from .hub import push_folder
    commit = push_folder(args.folder, args.repo_id, revision=args.revision, commit_message=args.message,
                         private=args.private, manifest_tag=args.tag)
    print(commit)
    return 0


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('push', help='publish a folder written by se_zoo.hub.save_folder to the Hugging Face Hub')
    p.add_argument('folder', help='folder with model.safetensors, config.json and README.md')
    p.add_argument('repo_id', help='Hub repo, ORG/NAME (created if missing)')
    p.add_argument('--revision', default='main', help='branch to commit to (default: main)')
    p.add_argument('--message', default=None, help='commit message')
    p.add_argument('--private', action='store_true', help='create the repo private')
    p.add_argument('--tag', default=None,
                   help='record the weight as ARCH.TAG in the weights manifest, pinned to the new commit')
    p.set_defaults(run=_push)


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert
    result = convert(args.source, args.to, args.out, source_format=args.source_format,
                     allow_pickle=args.allow_pickle, license=args.license, push=args.push)
    diff = 'not measured' if result.max_abs_logit_diff is None else f'{result.max_abs_logit_diff:.3g}'
    print(f'{result.source} -> {args.to}: {result.folder}  (max abs logit diff {diff})')
    if result.commit:
        print(f'pushed to {args.push} @ {result.commit}')
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('convert', help='convert a timm / torchvision / senet.pytorch checkpoint into se_zoo weights')
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


def build_parser() -> argparse.ArgumentParser:
    """The ``se-zoo`` argument parser."""
    parser = argparse.ArgumentParser(prog='se-zoo', description='Squeeze-and-Excitation networks for timm.')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for add in (_add_list, _add_info, _add_push, _add_convert):
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``se-zoo``; errors a user can act on are printed without a traceback and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f'se-zoo {args.command}: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
