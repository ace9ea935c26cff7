"""Start-up time and throughput of the ImageFolder data pipeline, before and after datasets were built by listing.

Before (se_zoo.data at ``--before-rev``): building the datasets opened and decoded every image twice (PIL's
``verify()``, then ``load()``) to refuse an unreadable one up front. After (the working tree): building lists
the files only; an unreadable image is skipped, counted and named when training meets it, and ``--check-images``
decodes them all up front in parallel for those who want it (timed here too, with ``--workers`` processes).

Method: a generated ImageFolder of ``--images`` JPEGs (``train/``, 100 classes) plus a small ``val/``: 160x120
crops of skimage.data's photos at random positions and scales, 256 distinct encodings written round-robin (real
JPEG content and sizes, ~5 KB each, without encoding 100k files). One untimed build warms the page cache (a
listing is then what a second run of a training script sees); then each round times every variant once,
interleaved, the order alternating from round to round, and a figure is the median over rounds.
Throughput: images/s through a ``DataLoader`` (``--workers`` processes, batch 64) with timm's training transform
at 224 px, over the first ``--throughput-images`` of a fixed shuffle.

    python benchmarks/bench_data.py --out benchmarks/results_data.md
    python benchmarks/bench_data.py --images 5000 --rounds 1 --out /tmp/smoke.md   # a smoke run
"""
import argparse
import datetime
import io
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import types
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform

import se_zoo.data as data_after

REPO = Path(__file__).resolve().parents[1]
# The last commit whose se_zoo.data decoded every image while building the datasets.
BEFORE_REV = 'fcfb8e8d1421f777892410185df1e98a3fc8aae8'


def data_module_at(rev: str) -> types.ModuleType:
    """se_zoo/data.py as it was at ``rev``, imported as a module of the se_zoo package (its relative imports)."""
    source = subprocess.run(['git', 'show', f'{rev}:se_zoo/data.py'], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout
    module = types.ModuleType('se_zoo._data_before')
    module.__package__ = 'se_zoo'
    exec(compile(source, f'{rev[:8]}:se_zoo/data.py', 'exec'), module.__dict__)
    return module


def generate_folder(root: Path, images: int, classes: int = 100, val_per_class: int = 10, seed: int = 0) -> float:
    """Write the ImageFolder; returns the seconds it took."""
    from skimage import data as skimage_data
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(skimage_data, name)()) for name in data_after.PHOTO_NAMES]
    encodings = []
    for i in range(256):
        photo = photos[i % len(photos)]
        w = int(rng.integers(photo.width // 3, photo.width))
        h = min(photo.height, w * 3 // 4)
        x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        buffer = io.BytesIO()
        photo.crop((x, y, x + w, y + h)).resize((160, 120), Image.BICUBIC).save(buffer, format='JPEG', quality=90)
        encodings.append(buffer.getvalue())
    k = 0
    for split, per_class in (('train', images // classes), ('val', val_per_class)):
        for c in range(classes):
            folder = root / split / f'n{c:08d}'
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f'{split}_{c:04d}_{i:05d}.JPEG').write_bytes(encodings[k % len(encodings)])
                k += 1
    return time.perf_counter() - start


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def throughput(dataset, transform, collate_fn, workers: int, n: int) -> float:
    """Images/s through a DataLoader with ``transform`` over ``n`` images of ``dataset`` (a fixed shuffle)."""
    indices = np.random.default_rng(0).permutation(len(dataset))[:n].tolist()
    subset = torch.utils.data.Subset(data_after.TransformedDataset(dataset, transform), indices)
    kwargs = {'collate_fn': collate_fn} if collate_fn is not None else {}
    loader = torch.utils.data.DataLoader(subset, batch_size=64, num_workers=workers, **kwargs)
    start = time.perf_counter()
    count = sum(len(batch[1]) for batch in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=100_000, help='training images to generate')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--throughput-images', type=int, default=3000)
    parser.add_argument('--before-rev', default=BEFORE_REV)
    parser.add_argument('--root', type=Path, help='where to generate the folder (default: a temporary one, removed)')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)

    data_before = data_module_at(args.before_rev)
    tmp = None
    if args.root is None:
        tmp = Path(tempfile.mkdtemp(prefix='se_zoo_bench_data_'))
        root = tmp / 'folder'
    else:
        root = args.root
    try:
        generated = generate_folder(root, args.images) if not (root / 'train').is_dir() else float('nan')
        n_train = sum(1 for _ in (root / 'train').rglob('*.JPEG'))
        n_val = sum(1 for _ in (root / 'val').rglob('*.JPEG'))
        size = sum(p.stat().st_size for p in (root / 'train').rglob('*.JPEG')) / n_train
        print(f'folder: {n_train} train + {n_val} val images, {size / 1e3:.1f} KB each, generated in {generated:.1f}s',
              flush=True)

        data_after.create_datasets(root)  # warm the page cache (directory entries)
        startup: Dict[str, List[float]] = {'before': [], 'after': [], 'after + check': []}

        def check() -> None:
            train, evaluation, _ = data_after.create_datasets(root, skip_unreadable=True)
            paths = data_after.dataset_image_paths(train) + data_after.dataset_image_paths(evaluation)
            assert not data_after.find_unreadable_images(paths, workers=args.workers)

        variants = {'before': lambda: data_before.create_datasets(root), 'after': lambda: data_after.create_datasets(root),
                    'after + check': check}
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                startup[name].append(time_once(variants[name]))
                print(f'round {r + 1}: {name} {startup[name][-1]:.2f}s', flush=True)

        transform = create_transform(224, is_training=True)
        rates: Dict[str, List[float]] = {'before': [], 'after': []}
        # Only the before dataset's reading is timed here: skip its decode-all check (timed above) when building it.
        data_before._check_image = lambda path: None
        train_before = data_before.create_datasets(root)[0]
        train_after = data_after.create_datasets(root, skip_unreadable=True)[0]
        for r in range(args.rounds):
            for name in (['before', 'after'] if r % 2 == 0 else ['after', 'before']):
                dataset, collate = (train_before, None) if name == 'before' else (train_after, data_after.collate_readable)
                rates[name].append(throughput(dataset, transform, collate, args.workers, args.throughput_images))
                print(f'round {r + 1}: {name} {rates[name][-1]:.0f} img/s', flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in startup.items()}
    rate = {k: statistics.median(v) for k, v in rates.items()}
    lines = [
        '# Data pipeline: start-up and throughput on a generated ImageFolder',
        '',
        f'`python benchmarks/bench_data.py --images {args.images} --rounds {args.rounds} --workers {args.workers} '
        f'--throughput-images {args.throughput_images}` '
        f'({datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with '
        f'other processes; before = se_zoo/data.py at {args.before_rev[:8]}). Folder: {n_train} training + {n_val} '
        f'validation JPEGs, 160x120, {size / 1e3:.1f} KB each. Medians of {args.rounds} interleaved rounds, '
        f'page cache warm.',
        '',
        '| | before | after | after, with --check-images |',
        '|---|---:|---:|---:|',
        f'| building the datasets (s) | {med["before"]:.1f} | {med["after"]:.2f} | {med["after + check"]:.1f} |',
        f'| images decoded while building | {2 * (n_train + n_val)} | 0 | {n_train + n_val} (in {args.workers} processes) |',
        f'| DataLoader, timm train transform at 224 px, {args.workers} workers (img/s) | {rate["before"]:.0f} '
        f'| {rate["after"]:.0f} | = after |',
        '',
        'Per round (s): ' + '; '.join(f'{k} ' + ', '.join(f'{v:.2f}' for v in vs) for k, vs in startup.items()),
        'Per round (img/s): ' + '; '.join(f'{k} ' + ', '.join(f'{v:.0f}' for v in vs) for k, vs in rates.items()),
        '',
    ]
    text = '\n'.join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == '__main__':
    main()
