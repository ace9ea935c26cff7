"""Print the README's model table: every se_zoo model's size and cost at its default input size.

    python benchmarks/model_table.py > table.md

Figures come from ``se_zoo.profile.profile_model`` (torch.utils.flop_counter, random weights, batch 1).
GMACs are FLOPs / 2. SE share counts the SE layers' parameters and the multiply-adds of their FC layers;
the squeeze pooling and the channel rescale are element-wise and not counted, as in the paper and timm.
"""
import argparse
from typing import List

import timm

import se_zoo
from se_zoo.weights.manifest import load_manifest
from se_zoo.profile import profile_model


def model_table(names: List[str]) -> str:
    """The markdown table for ``names``."""
    lines = [
        '| model | input | params (M) | GMACs | SE share of params | SE share of GMACs | default tag | top-1 | tags |',
        '|---|---|---:|---:|---:|---:|---|---:|---:|',
    ]
    manifest = load_manifest()
    for name in names:
        p = profile_model(name)
        tags = se_zoo.list_models(name + '.*', pretrained=True)
        default = f'{name}.{timm.models.get_pretrained_cfg(name).tag}' if tags else None
        entry = manifest.get(default)
        top1 = entry.metrics.get('top1') if entry else None
        shown = f'`{entry.tag}`' + (' (retrofit)' if entry.kind == 'retrofit' else '') if entry else '-'
        lines.append(
            f'| `{name}` | {p.input_size[-1]} | {p.params / 1e6:.2f} | {p.gmacs:.3f} '
            f'| {100 * p.se_param_share:.1f}% | {100 * p.se_flop_share:.3f}% | {shown} '
            f'| {f"{top1:.2f}" if top1 is not None else "-"} | {len(tags)} |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('filter', nargs='?', default='', help="wildcard filter, e.g. 'se_resnet*'")
    args = parser.parse_args()
    print(model_table(se_zoo.list_models(args.filter)))


if __name__ == '__main__':
    main()
