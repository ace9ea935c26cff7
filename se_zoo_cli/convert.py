"""``se-zoo convert``: timm / torchvision / senet.pytorch checkpoints into se_zoo weights."""
import argparse
from typing import Callable, Dict

from se_zoo.convert import convert

__all__ = ['ARGUMENTS']


def _convert(args: argparse.Namespace) -> int:
    result = convert(args.source, args.to, args.out, source_format=args.source_format,
                     allow_pickle=args.allow_pickle, license=args.license, push=args.push)
    diff = 'not measured' if result.max_abs_logit_diff is None else f'{result.max_abs_logit_diff:.3g}'
    print(f'{result.source} -> {args.to}: {result.folder}  (max abs logit diff {diff})')
    if result.commit:
        print(f'pushed to {args.push} @ {result.commit}')
    return 0


def _add_convert(p: argparse.ArgumentParser) -> None:
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


ARGUMENTS: Dict[str, Callable[[argparse.ArgumentParser], None]] = {'convert': _add_convert}
