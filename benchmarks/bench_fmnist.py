"""The Fashion-MNIST runs of docs/evidence.md, each a ``se_zoo.finetune.finetune`` call, and their results.

Sets (every run on the full 60k/10k split; accuracy is on the 10k test images after the last epoch):
- ``quickstart``: the README's Quick-start command (narrow se_resnet18 at 40 px, 3 epochs, no crop augmentation);
- ``se-vs-plain``: narrow se_resnet18 and timm resnet18 (channels 32..256, 28 px, 10 epochs, lr 2e-3), seeds 0-2;
- ``retrofit``: narrow resnet18 for 5 epochs (seed 0), then 5 more epochs from its best weights at lr 1e-3, as
  it is and with ``add_se=True``, seeds 0-2;
- ``best``: full-width se_resnet18 at 64 px, 8 epochs, crop scale 0.8-1, otherwise the defaults.

    python benchmarks/bench_fmnist.py quickstart                       # ~5 min on an idle 2-core CPU
    python benchmarks/bench_fmnist.py se-vs-plain retrofit best --device cuda

Each set writes ``benchmarks/results_fmnist_<set>.md`` (``--results``): one row per run (test accuracy per epoch,
images/s, seconds) and, for sets with seeds, the mean and sample standard deviation of the test error.
"""
import argparse
import datetime
import platform
import statistics
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from se_zoo.finetune import FinetuneResult, finetune

NARROW = {'channels': (32, 64, 128, 256)}
COMMON = dict(lr=2e-3, img_size=28, model_kwargs=NARROW)
SEEDS = (0, 1, 2)


def _runs(name: str, runs_dir: Path) -> List[Tuple[str, Dict[str, Any]]]:
    """(label, finetune keywords) of each run of a set, in order (a later run may start from an earlier one)."""
    if name == 'quickstart':
        return [('se_resnet18, quick start', dict(
            model='se_resnet18', model_kwargs={'channels': (24, 48, 96, 192)}, img_size=40, scale=(1., 1.), epochs=3,
            lr=2e-3))]
    if name == 'se-vs-plain':
        return [(f'{model}, seed {seed}', dict(model=model, epochs=10, seed=seed, **COMMON))
                for model in ('resnet18', 'se_resnet18') for seed in SEEDS]
    if name == 'retrofit':
        base = runs_dir / 'retrofit' / 'base'
        runs = [('resnet18, 5 epochs (the base)', dict(model='resnet18', epochs=5, seed=0, output=str(base), **COMMON))]
        for add_se in (False, True):
            for seed in SEEDS:
                runs.append((f'{"add_se" if add_se else "plain"}, seed {seed}', dict(
                    model='resnet18', init=str(base / 'best'), add_se=add_se, epochs=5, seed=seed,
                    **dict(COMMON, lr=1e-3))))
        return runs
    if name == 'best':
        return [('se_resnet18, 64 px', dict(model='se_resnet18', img_size=64, epochs=8, scale=(0.8, 1.)))]
    raise SystemExit(f'unknown set {name!r}; use quickstart, se-vs-plain, retrofit or best')


def _run(kwargs: Dict[str, Any], output: Path, device: str) -> FinetuneResult:
    kwargs = dict(kwargs)
    kwargs.setdefault('output', str(output))
    return finetune(data='fashion-mnist', overwrite=True, device=device, progress=False, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('sets', nargs='+')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--runs', type=Path, default=Path('runs/evidence'), help='where the runs write their folders')
    parser.add_argument('--results', type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device.startswith('cuda') else platform.processor() or 'CPU'
    for name in args.sets:
        lines = [f'# Fashion-MNIST: {name}', '',
                 f'`python benchmarks/bench_fmnist.py {name} --device {args.device}` ({datetime.date.today()}, '
                 f'{device_name}, {torch.get_num_threads()} threads).', '',
                 '| run | test accuracy per epoch (%) | test error (%) | images/s | seconds |', '|---|---|---:|---:|---:|']
        errors: Dict[str, List[float]] = {}
        for i, (label, kwargs) in enumerate(_runs(name, args.runs)):
            result = _run(kwargs, args.runs / name / f'run{i}', args.device)
            accs = [h.eval_accuracy for h in result.history]
            error = 100 - result.final_accuracy
            errors.setdefault(label.split(',')[0], []).append(error)
            seconds = sum(h.seconds for h in result.history)
            speed = statistics.median(h.images_per_second for h in result.history)
            lines.append(f'| {label} | {", ".join(f"{a:.2f}" for a in accs)} | {error:.2f} | {speed:.0f} | {seconds:.0f} |')
            print(lines[-1], flush=True)
        grouped = {k: v for k, v in errors.items() if len(v) > 1}
        if grouped:
            lines += ['', '| model | test error, mean ± sample std |', '|---|---:|']
            lines += [f'| {k} | {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} % |' for k, v in grouped.items()]
        path = args.results / f'results_fmnist_{name}.md'
        path.write_text('\n'.join(lines) + '\n')
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
