"""Write the upstream entries of ``weights/manifest.json`` from timm's pretrained cfgs and ``weights/upstream-weights.csv``.

Each CSV row is a public ImageNet checkpoint on the Hugging Face Hub (timm's repos) for one se_zoo architecture:
``se-trained`` weights load as they are (or with timm's EfficientNet SE names mapped), ``retrofit`` weights come
from the non-SE network and get every SE inserted as an exact identity (``se_zoo.state_dicts.retrofit_state_dict``).
The preprocessing and head come from the installed timm's cfg of the source tag; the metrics and licence from the
CSV (timm's results-imagenet.csv at the cfg's input size).

The default tag of an architecture is its most accurate SE-trained ImageNet-1k weight under a permissive licence,
and only where there is none its most accurate permissive retrofit. Entries are written unpinned; a maintainer who
is online pins them with ``se-zoo weights pin``. Entries already in the manifest keep their pins, and se_zoo's
own published weights are left alone.

Run from the repository root: ``python tools/generate_upstream_manifest.py``.
"""
import argparse
import csv
from pathlib import Path
from typing import Any, Dict, List

import timm

import se_zoo  # noqa: F401  (registers the se_* architectures)
from se_zoo.hub.manifest import CFG_FIELDS, MANIFEST_PATH, load_manifest, update_manifest

ROOT = Path(__file__).resolve().parents[1]
CSV_PATH = ROOT / 'weights' / 'upstream-weights.csv'
PERMISSIVE = ('apache-2.0', 'mit', 'bsd-3-clause', 'bsd-2-clause', 'cc0-1.0', 'cc-by-4.0')
# TensorFlow-ported EfficientNets pad like TF ('same') and use TF's BatchNorm eps.
TF_MODEL_ARGS = {'pad_type': 'same', 'bn_eps': 1e-3}


def _mapping(kind: str, source_arch: str) -> str:
    if kind == 'retrofit':
        return 'retrofit'
    # timm's MBConv SE convs are conv_reduce/conv_expand; its ResNet SE is fc1/fc2 like se_zoo's.
    return 'timm' if source_arch.startswith(('mobilenetv3', 'efficientnet', 'tf_efficientnet')) else 'none'


def _tag(row: Dict[str, str]) -> str:
    tag = row['source'].partition('.')[2]
    return f'{tag}_retrofit' if row['kind'] == 'retrofit' else tag


def _entry(row: Dict[str, str]) -> Dict[str, Any]:
    source_arch = row['source'].partition('.')[0]
    cfg = timm.models.get_pretrained_cfg(row['source']).to_dict()
    entry = {
        'repo_id': row['hf_hub_id'],
        'filename': row['hf_hub_filename'],
        'kind': row['kind'],
        'source': f'timm {row["source"]}',
        'source_arch': source_arch,
        'mapping': _mapping(row['kind'], source_arch),
        'model_args': dict(TF_MODEL_ARGS) if source_arch.startswith('tf_') else {},
        'license': row['license'],
        'pretrained_cfg': {k: cfg[k] for k in CFG_FIELDS if cfg.get(k) is not None},
    }
    if row['top1']:
        entry.update(metrics={'top1': float(row['top1']), 'top5': float(row['top5'])},
                     eval_size=int(row['eval_size']), eval_dataset='imagenet-1k')
    return entry


def _defaults(entries: Dict[str, Dict[str, Any]]) -> Dict[str, str]:
    by_arch: Dict[str, List[str]] = {}
    for name in entries:
        by_arch.setdefault(name.partition('.')[0], []).append(name)
    defaults = {}
    for arch, names in by_arch.items():
        candidates = [n for n in names if entries[n]['license'] in PERMISSIVE and entries[n].get('metrics')
                      and entries[n]['pretrained_cfg'].get('num_classes') == 1000]
        for kind in ('se-trained', 'retrofit'):
            ranked = sorted((n for n in candidates if entries[n]['kind'] == kind),
                            key=lambda n: -entries[n]['metrics']['top1'])
            if ranked:
                defaults[arch] = ranked[0]
                break
    return defaults


def generate(csv_path: Path = CSV_PATH, manifest: Path = MANIFEST_PATH) -> Dict[str, Dict[str, Any]]:
    """The upstream entries, with their defaults marked, merged into ``manifest`` (pins already there kept)."""
    with open(csv_path, newline='') as f:
        rows = list(csv.DictReader(f))
    entries: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        name = f'{row["se_zoo_arch"]}.{_tag(row)}'
        if name in entries:
            raise SystemExit(f'{csv_path}: two sources give the tag {name}')
        entries[name] = _entry(row)
    for arch, name in _defaults(entries).items():
        entries[name]['default'] = True
    existing = load_manifest(manifest) if manifest.exists() else {}
    for name, entry in entries.items():
        old = existing.get(name, {})
        if old.get('repo_id') == entry['repo_id'] and old.get('revision'):
            entry.update({k: old[k] for k in ('revision', 'sha256', 'size')})
    stale = [n for n, e in existing.items() if e.get('kind') in ('se-trained', 'retrofit') and n not in entries]
    return update_manifest(entries, manifest, remove=stale)  # validates every entry first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--csv', type=Path, default=CSV_PATH)
    parser.add_argument('--manifest', type=Path, default=MANIFEST_PATH)
    args = parser.parse_args()
    manifest = generate(args.csv, args.manifest)
    defaults = sorted(n for n, e in manifest.items() if e.get('default'))
    print(f'{args.manifest}: {len(manifest)} entries; defaults: {", ".join(defaults)}')


if __name__ == '__main__':
    main()
