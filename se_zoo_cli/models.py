"""``se-zoo list`` and ``se-zoo info``: the models and their weights."""
import argparse
from typing import Callable, Dict

from se_zoo.weights.manifest import load_manifest
from se_zoo.models import list_models
from se_zoo.profile import profile_model

__all__ = ['ARGUMENTS']


def _list(args: argparse.Namespace) -> int:
    names = list_models(args.filter, pretrained=args.pretrained)
    if not args.pretrained:
        print('\n'.join(names))
        return 0
    if not names:
        print(f'no pretrained weights match {args.filter!r}' if args.filter else 'no pretrained weights are listed')
        return 0
    manifest = load_manifest()
    rows = [('tag', 'source', 'kind', 'top-1', 'licence', 'format', 'pinned')]
    for name in names:
        entry = manifest[name]
        top1 = entry.metrics.get('top1')
        kind = entry.kind + (' (SE untrained)' if entry.kind == 'retrofit' else '')
        source = f'timm {entry.timm_source}' if entry.timm_source else entry.source or entry.hub_file[0]
        file_format = 'pickle (weights_only)' if entry.is_pickle else 'safetensors'
        rows.append((name + (' *' if entry.default else ''), source, kind, f'{top1:.2f}' if top1 is not None else '-',
                     entry.resolved_license or '', file_format, 'yes' if entry.pinned else 'no'))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        print('  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print('* the default tag of its architecture. Unpinned weights are checked against the sha256 the Hub reports (a '
          'URL file: the prefix in its name); pickle files are read with torch.load(weights_only=True) after that')
    return 0


def _add_list(p: argparse.ArgumentParser) -> None:
    p.add_argument('filter', nargs='?', default='', help="wildcard filter, e.g. 'se_resnet*'")
    p.add_argument('--pretrained', action='store_true',
                   help='list the arch.tag weights: source, kind, top-1, licence, pinned or not')
    p.set_defaults(run=_list)


def _info(args: argparse.Namespace) -> int:
    prof = profile_model(args.name)
    c, h, w = prof.input_size
    print(f'{prof.name}  (input {c}x{h}x{w})')
    print(f'  params        {prof.params / 1e6:.3f} M   SE share {100 * prof.se_param_share:.2f}%')
    print(f'  GMACs         {prof.gmacs:.3f}     SE share {100 * prof.se_flop_share:.3f}%')
    print(f'  weights       {"listed (se-zoo list --pretrained)" if prof.has_weights else "none listed"}')
    print('  features      ' + '  '.join(f'{f["module"]}: {f["num_chs"]}ch /{f["reduction"]}' for f in prof.features))
    return 0


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument('name', help='model name, e.g. se_resnet50')
    p.set_defaults(run=_info)


ARGUMENTS: Dict[str, Callable[[argparse.ArgumentParser], None]] = {'list': _add_list, 'info': _add_info}
