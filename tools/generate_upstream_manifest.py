"""Write the upstream entries of ``weights/manifest.json`` from ``weights/upstream/*.csv`` (one file per family).

Each CSV row is a public ImageNet checkpoint that timm publishes, named by its timm tag (``source``), for one se_zoo
architecture: ``se-trained`` weights load as they are or through a key mapping (``mapping``, see
``se_zoo.state_dicts``), with the se_zoo keywords their layout needs (``model_args``, JSON); ``retrofit`` weights come
from the non-SE network and get every SE inserted as an exact identity. Where the file lives, its preprocessing, head
and licence are timm's cfg of the source tag, read when se_zoo is imported, so an entry holds only what timm's cfg
does not: the mapping, the keywords, the published top-1/top-5 (timm's results tables at ``eval_size``), the default
flag and, once pinned, the file's digest.

The default tag of an architecture is its most accurate SE-trained ImageNet-1k weight under a permissive licence,
and only where there is none its most accurate permissive retrofit. Entries are written unpinned; a maintainer who is
online pins them with ``se-zoo weights pin``. Entries already in the manifest keep their pins, and se_zoo's own
published weights are left alone.

Run from the repository root: ``python tools/generate_upstream_manifest.py``.
"""
import argparse
import csv
import dataclasses
import json
from pathlib import Path
from typing import Dict, List

import se_zoo  # noqa: F401  (registers the se_* architectures)
from se_zoo.weights.manifest import MANIFEST_PATH, WeightEntry, load_manifest, update_manifest

ROOT = Path(__file__).resolve().parents[1]
CSV_DIR = ROOT / 'weights' / 'upstream'
PERMISSIVE = ('apache-2.0', 'mit', 'bsd-3-clause', 'bsd-2-clause', 'cc0-1.0', 'cc-by-4.0')


def _tag(row: Dict[str, str]) -> str:
    tag = row['source'].partition('.')[2]
    return f'{tag}_retrofit' if row['kind'] == 'retrofit' else tag


def _entry(name: str, row: Dict[str, str]) -> WeightEntry:
    metrics = {k: float(row[k]) for k in ('top1', 'top5') if row.get(k)}
    return WeightEntry(
        name=name, timm_source=row['source'], kind=row['kind'], mapping=row['mapping'] or 'none',
        model_args=json.loads(row['model_args']) if row.get('model_args') else {},
        metrics=metrics, eval_size=int(row['eval_size']) if metrics and row.get('eval_size') else None,
        eval_dataset='imagenet-1k' if metrics else None,
    )


def _defaults(entries: Dict[str, WeightEntry]) -> Dict[str, str]:
    by_arch: Dict[str, List[WeightEntry]] = {}
    for entry in entries.values():
        by_arch.setdefault(entry.arch, []).append(entry)
    defaults = {}
    for arch, candidates in by_arch.items():
        candidates = [e for e in candidates if e.resolved_license in PERMISSIVE and 'top1' in e.metrics
                      and e.cfg({}).get('num_classes') == 1000]
        for kind in ('se-trained', 'retrofit'):
            ranked = sorted((e for e in candidates if e.kind == kind), key=lambda e: (-e.metrics['top1'], e.name))
            if ranked:
                defaults[arch] = ranked[0].name
                break
    return defaults


def generate(csv_dir: Path = CSV_DIR, manifest: Path = MANIFEST_PATH) -> Dict[str, WeightEntry]:
    """The upstream entries, with their defaults marked, merged into ``manifest`` (pins already there kept)."""
    entries: Dict[str, WeightEntry] = {}
    for csv_path in sorted(csv_dir.glob('*.csv')):
        with open(csv_path, newline='') as f:
            for row in csv.DictReader(f):
                name = f'{row["se_zoo_arch"]}.{_tag(row)}'
                if name in entries:
                    raise SystemExit(f'{csv_path}: two sources give the tag {name}')
                entries[name] = _entry(name, row)
    defaults = set(_defaults(entries).values())
    existing = load_manifest(manifest) if manifest.exists() else {}
    for name, entry in entries.items():
        old = existing.get(name)
        pins = {k: getattr(old, k) for k in ('revision', 'sha256', 'size')} \
            if old is not None and old.timm_source == entry.timm_source and old.pinned else {}
        entries[name] = dataclasses.replace(entry, **pins, default=name in defaults)
    stale = [n for n, e in existing.items() if e.timm_source and n not in entries]
    return update_manifest(entries, manifest, remove=stale)  # validates every entry first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--csv-dir', type=Path, default=CSV_DIR)
    parser.add_argument('--manifest', type=Path, default=MANIFEST_PATH)
    args = parser.parse_args()
    manifest = generate(args.csv_dir, args.manifest)
    defaults = sorted(n for n, e in manifest.items() if e.default)
    print(f'{args.manifest}: {len(manifest)} entries; defaults: {", ".join(defaults)}')


if __name__ == '__main__':
    main()
