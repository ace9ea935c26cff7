"""se_zoo against timm: inference, training step, peak training memory and torch.compile, in one process.

Method: every implementation of a comparison runs once per round, interleaved (A B A B ..., the order rotating
from round to round), so that load from other processes hits all of them alike; a ratio is the median of the
per-round ratios, a time the median over rounds. Models are randomly initialised (timings do not depend on the
weights) and built at their default 224x224 resolution.

    python benchmarks/bench_se.py --out benchmarks/results_cpu.md                # CPU: contiguous and channels_last
    python benchmarks/bench_se.py --quick --out /tmp/smoke.md                    # smoke test, about a minute
    python benchmarks/bench_se.py --device cuda --out benchmarks/results_gpu.md  # bf16 autocast, channels_last

The CPU run does 25 rounds of 15 models at batch 1 and 8, 9 training steps and 3 compiled models; with
``--rounds 15`` it took 203 s on an idle 2-core machine (2 threads), and the CUDA run with ``--compile-pairs all``
217 s on an H200. ``--rounds`` and ``--sections`` trade precision for time.

Writes the markdown table to ``--out`` and a chart next to it (same name, ``.png``).
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# torch.profiler (peak CPU memory) logs every session start/stop through kineto unless told otherwise
os.environ.setdefault('KINETO_LOG_LEVEL', '5')

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402  (benchmarks/measure.py: the allocator settings and timer every benchmark shares)

if __name__ == '__main__':
    measure.use_benchmark_allocator()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import timm  # noqa: E402

import se_zoo  # noqa: E402
from timm.utils import reparameterize_model  # noqa: E402

# (label, timm counterpart, se_zoo model)
PAIRS: Tuple[Tuple[str, str, str], ...] = (
    ('SE-ResNet-50', 'seresnet50', 'se_resnet50'),
    ('SE-ResNeXt-50 32x4d', 'seresnext50_32x4d', 'se_resnext50_32x4d'),
    ('MobileNetV3-L', 'mobilenetv3_large_100', 'se_mobilenet_v3_large_100'),
    ('EfficientNet-B0', 'efficientnet_b0', 'se_efficientnet_b0'),
)
PLAIN_BASELINE = 'resnet50'  # the SE overhead is se_resnet50 / resnet50
FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


@dataclass
class Row:
    """One comparison: the median times of each implementation and the median per-round ratios."""
    section: str
    label: str
    batch: int
    fmt: str
    times: Dict[str, float]  # implementation -> median seconds
    ratios: Dict[str, float]  # name -> median of per-round ratios
    extra: Dict[str, float] = field(default_factory=dict)
    spread: Dict[str, Tuple[float, float]] = field(default_factory=dict)  # name -> interquartile range of the ratios


@dataclass
class Settings:
    device: torch.device
    rounds: int
    img_size: int
    amp_dtype: Optional[torch.dtype]
    min_sample_s: float  # on CUDA a sample repeats the call until it lasts this long, between synchronisations


# ---------------------------------------------------------------------------------------------------- measurement

def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _autocast(settings: Settings):
    if settings.amp_dtype is None:
        return torch.autocast(settings.device.type, enabled=False)
    return torch.autocast(settings.device.type, dtype=settings.amp_dtype)


def interleaved(fns: Dict[str, Callable[[], object]], settings: Settings, warmup: int = 2) -> Dict[str, List[float]]:
    """Seconds per call of each fn, one sample per fn per round, in rotating order (``benchmarks/measure.py``)."""
    return measure.interleaved(fns, settings.rounds, min_sample_s=settings.min_sample_s, warmup=warmup,
                               sync=lambda: _sync(settings.device))


def median_ratio(num: List[float], den: List[float]) -> float:
    return measure.median_ratio(num, den)


def ratio_spread(num: List[float], den: List[float]) -> Tuple[float, float]:
    """The 25th and 75th percentiles of the per-round ratios: how far apart two rounds of this machine can be."""
    return measure.ratio_quartiles(num, den)[1:]


def peak_train_memory(step: Callable[[], object], device: torch.device) -> float:
    """Peak bytes allocated during one training step above what was live before it.

    CUDA: the caching allocator's ``max_memory_allocated``. CPU: the allocation events torch.profiler records with
    ``profile_memory=True``, which carry the CPU allocator's running total of live bytes since profiling began.
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()

    def walk(events):
        for event in events:
            yield event
            yield from walk(event.children)

    allocations = sorted((e for e in walk(prof.profiler.kineto_results.experimental_event_tree())
                          if e.tag == _EventType.Allocation), key=lambda e: e.start_time_ns)
    if not allocations:
        raise RuntimeError('torch.profiler recorded no CPU allocations; cannot measure peak memory')
    # the running total carries over between profiling sessions: measure from the total before the step
    first = allocations[0].extra_fields
    before = first.total_allocated - first.alloc_size
    return float(max(e.extra_fields.total_allocated for e in allocations) - before)


# ---------------------------------------------------------------------------------------------------- models

def build(name: str, settings: Settings, memory_format: torch.memory_format, optimized: bool = False,
          fused: bool = False) -> nn.Module:
    """``optimized``: as ``se_zoo.optimize_for_inference(model)`` returns it (channels_last whatever the input);
    ``fused``: every SE-ResNet block on its opt-in fused path (``timm.utils.reparameterize_model``), nothing else
    changed."""
    torch.manual_seed(0)
    model = timm.create_model(name)
    if fused:
        model = reparameterize_model(model)
    if optimized:
        return se_zoo.optimize_for_inference(model).to(settings.device)
    return model.to(settings.device, memory_format=memory_format).eval()


def images(batch: int, settings: Settings, memory_format: torch.memory_format) -> torch.Tensor:
    x = torch.randn(batch, 3, settings.img_size, settings.img_size, device=settings.device)
    return x.contiguous(memory_format=memory_format)


def inference_fn(model: nn.Module, x: torch.Tensor, settings: Settings) -> Callable[[], object]:
    def run():
        with torch.inference_mode(), _autocast(settings):
            return model(x)
    return run


def train_step_fn(model: nn.Module, x: torch.Tensor, settings: Settings) -> Callable[[], object]:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    target = torch.randint(0, 1000, (x.shape[0],), device=settings.device, generator=None)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(settings):
            loss = loss_fn(model(x), target)
        loss.backward()
        optimizer.step()
        return loss
    return step


# ---------------------------------------------------------------------------------------------------- sections

def bench_inference(settings: Settings, batches: Sequence[int], formats: Sequence[str],
                    pairs: Sequence[Tuple[str, str, str]], log: Callable[[str], None]) -> List[Row]:
    rows = []
    for fmt in formats:
        memory_format = FORMATS[fmt]
        models = {PLAIN_BASELINE: build(PLAIN_BASELINE, settings, memory_format),
                  'se_resnet50 fused': build('se_resnet50', settings, memory_format, fused=True)}
        for _, timm_name, se_name in pairs:
            models[timm_name] = build(timm_name, settings, memory_format)
            models[se_name] = build(se_name, settings, memory_format)
            models[se_name + '+opt'] = build(se_name, settings, memory_format, optimized=True)
        for batch in batches:
            x = images(batch, settings, memory_format)
            samples = interleaved({n: inference_fn(m, x, settings) for n, m in models.items()}, settings)
            med = {n: statistics.median(v) for n, v in samples.items()}
            base = samples[PLAIN_BASELINE]
            compared = ('seresnet50', 'se_resnet50', 'se_resnet50 fused')
            rows.append(Row('overhead', 'SE overhead vs resnet50', batch, fmt,
                            {n: med[n] for n in (PLAIN_BASELINE, *compared, 'se_resnet50+opt') if n in med},
                            {n: median_ratio(samples[n], base) for n in compared if n in med},
                            spread={n: ratio_spread(samples[n], base) for n in compared if n in med}))
            for label, timm_name, se_name in pairs:
                rows.append(Row('inference', label, batch, fmt,
                                {timm_name: med[timm_name], se_name: med[se_name], se_name + '+opt': med[se_name + '+opt']},
                                {'eager': median_ratio(samples[timm_name], samples[se_name]),
                                 'optimized': median_ratio(samples[timm_name], samples[se_name + '+opt'])},
                                spread={'eager': ratio_spread(samples[timm_name], samples[se_name]),
                                        'optimized': ratio_spread(samples[timm_name], samples[se_name + '+opt'])}))
                log(f'inference {fmt} b{batch} {label}: se_zoo x{rows[-1].ratios["eager"]:.3f} '
                    f'(optimized x{rows[-1].ratios["optimized"]:.3f}) vs timm')
            log(f'overhead {fmt} b{batch}: se_resnet50/resnet50 {rows[-len(pairs) - 1].ratios.get("se_resnet50", 0):.3f}')
        del models
    return rows


def bench_training(settings: Settings, batch: int, fmt: str, pairs: Sequence[Tuple[str, str, str]],
                   log: Callable[[str], None]) -> List[Row]:
    memory_format = FORMATS[fmt]
    x = images(batch, settings, memory_format)
    names = [PLAIN_BASELINE] + [n for _, t, s in pairs for n in (t, s)]
    steps = {n: train_step_fn(build(n, settings, memory_format), x, settings) for n in names}
    samples = interleaved(steps, settings)
    peaks = {}
    for name, step in steps.items():
        # the first profiled step cannot see the frees of tensors from unprofiled steps (grads, optimizer state);
        # from the second on, every tensor that lives across steps was allocated under the profiler
        peak_train_memory(step, settings.device)
        peaks[name] = peak_train_memory(step, settings.device)
    rows = []
    for label, timm_name, se_name in pairs:
        rows.append(Row('training', label, batch, fmt,
                        {timm_name: statistics.median(samples[timm_name]), se_name: statistics.median(samples[se_name])},
                        {'step': median_ratio(samples[timm_name], samples[se_name])},
                        {'peak_timm': peaks[timm_name], 'peak_se': peaks[se_name]},
                        {'step': ratio_spread(samples[timm_name], samples[se_name])}))
        log(f'training {fmt} b{batch} {label}: se_zoo x{rows[-1].ratios["step"]:.3f} vs timm, '
            f'peak {peaks[se_name] / 2**20:.0f} vs {peaks[timm_name] / 2**20:.0f} MiB')
    rows.append(Row('training', 'SE overhead vs resnet50', batch, fmt,
                    {n: statistics.median(samples[n]) for n in (PLAIN_BASELINE, 'seresnet50', 'se_resnet50')
                     if n in samples},
                    {n: median_ratio(samples[n], samples[PLAIN_BASELINE]) for n in ('seresnet50', 'se_resnet50')
                     if n in samples},
                    {'peak_' + n: peaks[n] for n in (PLAIN_BASELINE, 'seresnet50', 'se_resnet50') if n in peaks}))
    return rows


def bench_compile(settings: Settings, batch: int, fmt: str, pairs: Sequence[Tuple[str, str, str]],
                  log: Callable[[str], None]) -> List[Row]:
    memory_format = FORMATS[fmt]
    x = images(batch, settings, memory_format)
    names = [n for _, t, s in pairs for n in (t, s)]
    if any(s == 'se_resnet50' for _, _, s in pairs):
        names = [PLAIN_BASELINE] + names
    fns, compile_s = {}, {}
    for name in names:
        model = torch.compile(build(name, settings, memory_format))
        fn = inference_fn(model, x, settings)
        start = time.perf_counter()
        fn()
        _sync(settings.device)
        compile_s[name] = time.perf_counter() - start
        fns[name] = fn
        log(f'compiled {name} in {compile_s[name]:.0f} s')
    samples = interleaved(fns, settings)
    rows = []
    for label, timm_name, se_name in pairs:
        rows.append(Row('compile', label, batch, fmt,
                        {timm_name: statistics.median(samples[timm_name]), se_name: statistics.median(samples[se_name])},
                        {'compiled': median_ratio(samples[timm_name], samples[se_name])},
                        {'compile_s_timm': compile_s[timm_name], 'compile_s_se': compile_s[se_name]},
                        {'compiled': ratio_spread(samples[timm_name], samples[se_name])}))
        log(f'compile {fmt} b{batch} {label}: se_zoo x{rows[-1].ratios["compiled"]:.3f} vs timm')
    if PLAIN_BASELINE in samples:
        rows.append(Row('compile', 'SE overhead vs resnet50', batch, fmt,
                        {n: statistics.median(samples[n]) for n in (PLAIN_BASELINE, 'seresnet50', 'se_resnet50')},
                        {n: median_ratio(samples[n], samples[PLAIN_BASELINE]) for n in ('seresnet50', 'se_resnet50')}))
    return rows


# ---------------------------------------------------------------------------------------------------- report

def _ratio(row: Row, key: str) -> str:
    if key not in row.spread:
        return f'{row.ratios[key]:.3f}'
    low, high = row.spread[key]
    return f'{row.ratios[key]:.3f} ({low:.2f}–{high:.2f})'


def _speed(seconds: float, batch: int, gpu: bool) -> str:
    return f'{batch / seconds:,.0f} img/s' if gpu else f'{seconds * 1e3:.1f} ms'


def _pair_row(r: Row, gpu: bool, *cells: str) -> str:
    """A table row: label, batch, format, the speed of each implementation in ``r.times`` order, then ``cells``."""
    speeds = ' | '.join(_speed(seconds, r.batch, gpu) for seconds in r.times.values())
    return f'| {r.label} | {r.batch} | {r.fmt} | {speeds} | ' + ' | '.join(cells) + ' |'


def render(rows: List[Row], settings: Settings, header: Dict[str, str]) -> Tuple[str, List[Tuple[str, bool, str]]]:
    gpu = settings.device.type == 'cuda'
    unit = 'images/s (median)' if gpu else 'ms per call (median)'
    out = ['# se_zoo vs timm, and what SE costs over a plain ResNet-50', '']
    out += [f'- {k}: {v}' for k, v in header.items()]
    out += ['', 'Speed-ups are medians of per-round ratios timm time / se_zoo time (> 1: se_zoo faster); '
            f'absolute figures are {unit}. In brackets: the interquartile range of the per-round ratios, this '
            'machine\'s noise. "optimized" is `se_zoo.optimize_for_inference(model)`.', '']

    inference = [r for r in rows if r.section == 'inference']
    if inference:
        out += ['## Inference (eager)', '',
                '| model | batch | format | timm | se_zoo | se_zoo optimized | speed-up eager | speed-up optimized |',
                '|---|---:|---|---:|---:|---:|---:|---:|']
        for r in inference:
            out.append(_pair_row(r, gpu, _ratio(r, 'eager'), _ratio(r, 'optimized')))
        out.append('')
    overhead = [r for r in rows if r.label == 'SE overhead vs resnet50']
    if overhead:
        out += ['## SE overhead: time / timm resnet50 time (1.00 = free)', '',
                '| mode | batch | format | resnet50 | timm seresnet50 | se_zoo se_resnet50 | overhead timm | '
                'overhead se_zoo | overhead se_zoo fused path |',
                '|---|---:|---|---:|---:|---:|---:|---:|---:|']
        for r in overhead:
            mode = {'overhead': 'inference eager', 'training': 'training step', 'compile': 'inference compiled'}[r.section]
            fused = _ratio(r, 'se_resnet50 fused') if 'se_resnet50 fused' in r.ratios else '–'
            out.append(f'| {mode} | {r.batch} | {r.fmt} | {_speed(r.times[PLAIN_BASELINE], r.batch, gpu)} | '
                       f'{_speed(r.times["seresnet50"], r.batch, gpu)} | {_speed(r.times["se_resnet50"], r.batch, gpu)} | '
                       f'{_ratio(r, "seresnet50")} | {_ratio(r, "se_resnet50")} | {fused} |')
        out += ['', 'The fused path is se_zoo\'s se_resnet50 switched by `timm.utils.reparameterize_model` (squeeze through '
                'conv3, addcmul epilogue; on in `optimize_for_inference`, off by default because it reorders float '
                'sums): the difference to the column before it is what that path buys on its own.',
                '']
    training = [r for r in rows if r.section == 'training' and r.label != 'SE overhead vs resnet50']
    if training:
        out += ['## Training step (forward + backward + SGD step)', '',
                '| model | batch | format | timm | se_zoo | speed-up | peak memory timm | peak memory se_zoo |',
                '|---|---:|---|---:|---:|---:|---:|---:|']
        for r in training:
            out.append(_pair_row(r, gpu, _ratio(r, 'step'), f'{r.extra["peak_timm"] / 2**20:.0f} MiB',
                                 f'{r.extra["peak_se"] / 2**20:.0f} MiB'))
        out += ['', 'Peak memory: bytes allocated during one steady-state step above what was live before it '
                + ('(`torch.cuda.max_memory_allocated`).' if gpu else
                   '(CPU allocator running total recorded by `torch.profiler(profile_memory=True)`).'), '']
    compiled = [r for r in rows if r.section == 'compile' and r.label != 'SE overhead vs resnet50']
    if compiled:
        out += ['## torch.compile (inference, default mode)', '',
                '| model | batch | format | timm | se_zoo | speed-up | compile time timm / se_zoo |',
                '|---|---:|---|---:|---:|---:|---:|']
        for r in compiled:
            out.append(_pair_row(r, gpu, _ratio(r, 'compiled'),
                                 f'{r.extra["compile_s_timm"]:.0f} s / {r.extra["compile_s_se"]:.0f} s'))
        out.append('')

    targets = _targets(rows, gpu)
    out += ['## Targets', '', '| target | measured | met |', '|---|---|---|']
    out += [f'| {name} | {measured} | {"yes" if met else "**no**"} |' for name, met, measured in targets]
    out.append('')
    return '\n'.join(out), targets


def _targets(rows: List[Row], gpu: bool) -> List[Tuple[str, bool, str]]:
    targets = []
    limit = 1.05 if gpu else 1.02
    eager_overhead = [r for r in rows if r.section == 'overhead' and (gpu or r.batch == 8)]
    if eager_overhead:
        worst = max(r.ratios['se_resnet50'] for r in eager_overhead)
        targets.append((f'SE overhead se_resnet50 / resnet50 <= {limit}, eager'
                        + ('' if gpu else ', batch 8, both formats'),
                        worst <= limit, ', '.join(f'{r.fmt} b{r.batch}: {r.ratios["se_resnet50"]:.3f}'
                                                  for r in eager_overhead)))
    r50 = [r for r in rows if r.section == 'inference' and r.label == 'SE-ResNet-50']
    if r50 and not gpu:
        targets.append(('se_resnet50 >= 1.10x timm seresnet50, eager', min(r.ratios['eager'] for r in r50) >= 1.10,
                        ', '.join(f'{r.fmt} b{r.batch}: {r.ratios["eager"]:.3f}' for r in r50)))
        targets.append(('se_resnet50 optimized >= 1.3x timm seresnet50', min(r.ratios['optimized'] for r in r50) >= 1.3,
                        ', '.join(f'{r.fmt} b{r.batch}: {r.ratios["optimized"]:.3f}' for r in r50)))
    speed = [(f'{r.section} {r.label} {r.fmt} b{r.batch}', r, k) for r in rows
             if r.section in ('inference', 'training') and r.label != 'SE overhead vs resnet50'
             for k in r.ratios if k in ('eager', 'step')]
    if speed:
        slow = [f'{name}: {_ratio(r, k)}' for name, r, k in speed if r.ratios[k] < 1.0]
        targets.append(('no se_zoo model slower than timm (eager inference, training step)', not slow,
                        'slower: ' + ', '.join(slow) if slow else f'all {len(speed)} comparisons >= 1.0'))
    memory = [r for r in rows if r.section == 'training' and 'peak_se' in r.extra]
    if memory:
        worse = [f'{r.label}: {r.extra["peak_se"] / 2**20:.0f} vs {r.extra["peak_timm"] / 2**20:.0f} MiB'
                 for r in memory if r.extra['peak_se'] > r.extra['peak_timm']]
        targets.append(('peak training memory <= timm', not worse, ', '.join(worse) or 'all pairs'))
    compiled = [r for r in rows if r.section == 'compile' and 'compiled' in r.ratios]
    if compiled:
        targets.append(('torch.compile se_zoo >= torch.compile timm', min(r.ratios['compiled'] for r in compiled) >= 1.0,
                        ', '.join(f'{r.label}: {r.ratios["compiled"]:.3f}' for r in compiled)))
    return targets


def chart(rows: List[Row], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    bars = []
    for r in rows:
        if r.label == 'SE overhead vs resnet50':
            continue
        for key, value in r.ratios.items():
            bars.append((f'{r.label} | {r.section}{"" if key in ("eager", "step", "compiled") else " " + key} | '
                         f'b{r.batch} {r.fmt}', value))
    overhead = [(f'{r.section} b{r.batch} {r.fmt}', r.ratios['seresnet50'], r.ratios['se_resnet50'])
                for r in rows if r.label == 'SE overhead vs resnet50']
    fig, axes = plt.subplots(1, 2, figsize=(15, max(4, 0.28 * len(bars) + 1.5)),
                             gridspec_kw={'width_ratios': [3, 2]})
    labels, values = zip(*bars) if bars else ((), ())
    axes[0].barh(range(len(values)), values, color=['tab:green' if v >= 1 else 'tab:red' for v in values])
    axes[0].set_yticks(range(len(values)), labels, fontsize=7)
    axes[0].axvline(1.0, color='k', lw=0.8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel('se_zoo speed-up over timm (median of per-round ratios)')
    if overhead:
        ys = range(len(overhead))
        axes[1].barh([y - 0.2 for y in ys], [o[1] for o in overhead], height=0.4, label='timm seresnet50')
        axes[1].barh([y + 0.2 for y in ys], [o[2] for o in overhead], height=0.4, label='se_zoo se_resnet50')
        axes[1].set_yticks(list(ys), [o[0] for o in overhead], fontsize=7)
        axes[1].axvline(1.0, color='k', lw=0.8)
        axes[1].invert_yaxis()
        axes[1].set_xlim(left=min([0.9] + [v - 0.05 for o in overhead for v in o[1:]]))
        axes[1].set_xlabel('time / timm resnet50 time (SE overhead)')
        axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    plt.close(fig)


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def _write_text(path: str, text: str) -> None:
    with open(path, 'w') as f:
        f.write(text)


def _atomic(path: str, write: Callable[[str], None]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.')
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------------- main

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--out', default=None, help='markdown output (default benchmarks/results_<device>.md); '
                                                    'the chart is written next to it as .png')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--rounds', type=int, default=None, help='interleaved rounds (default 25; --quick 2)')
    parser.add_argument('--quick', action='store_true', help='smoke test: 2 rounds, batch 1, 128 px, no compile')
    parser.add_argument('--sections', default=None,
                        help='comma-separated subset of inference,training,compile (default all; --quick: no compile)')
    parser.add_argument('--compile-pairs', default='SE-ResNet-50',
                        help="comma-separated pair labels to torch.compile, or 'all' (default SE-ResNet-50, "
                             'which also compiles resnet50 for the overhead)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available')
    gpu = device.type == 'cuda'
    torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cudnn.benchmark = True
    rounds = args.rounds or (2 if args.quick else 25)
    if rounds < 1:
        raise SystemExit('--rounds must be >= 1')
    default_sections = 'inference,training' if args.quick else 'inference,training,compile'
    sections = {s.strip() for s in (args.sections or default_sections).split(',') if s.strip()}
    unknown = sections - {'inference', 'training', 'compile'}
    if unknown:
        raise SystemExit(f'unknown --sections {sorted(unknown)}; choose from inference, training, compile')
    labels = {p[0] for p in PAIRS}
    compile_pairs = PAIRS if args.compile_pairs == 'all' else tuple(
        p for p in PAIRS if p[0] in {s.strip() for s in args.compile_pairs.split(',')})
    if args.compile_pairs != 'all' and not compile_pairs:
        raise SystemExit(f'--compile-pairs: none of {args.compile_pairs!r} is one of {sorted(labels)}')
    settings = Settings(device=device, rounds=rounds, img_size=128 if args.quick else 224,
                        amp_dtype=torch.bfloat16 if gpu else None, min_sample_s=0.05 if gpu else 0.0)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), f'results_{args.device}.md')
    formats = ('channels_last',) if gpu else tuple(FORMATS)
    inference_batches = (1,) if args.quick else ((1, 8, 256) if gpu else (1, 8))
    train_batch = 2 if args.quick else (128 if gpu else 8)
    compile_batch = 1 if args.quick else (256 if gpu else 8)

    def log(message: str) -> None:
        print(f'[{time.perf_counter() - t0:6.0f} s] {message}', flush=True)

    t0 = time.perf_counter()
    rows: List[Row] = []
    if 'inference' in sections:
        rows += bench_inference(settings, inference_batches, formats, PAIRS, log)
    if 'training' in sections:
        rows += bench_training(settings, train_batch, 'channels_last', PAIRS, log)
    if 'compile' in sections:
        rows += bench_compile(settings, compile_batch, 'channels_last', compile_pairs, log)

    device_name = torch.cuda.get_device_name(device) if gpu else _cpu_name()
    header = {
        'device': device_name + ('' if gpu else f', {args.threads} torch threads ({os.cpu_count()} cores visible)'),
        'precision': 'bf16 autocast' if gpu else 'float32',
        'software': f'torch {torch.__version__}, timm {timm.__version__}, se_zoo {se_zoo.__version__}, '
                    f'Python {platform.python_version()}',
        'method': f'{rounds} interleaved rounds, {settings.img_size}x{settings.img_size} input'
                  + (f', >= {settings.min_sample_s * 1e3:.0f} ms per sample' if gpu else ''),
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'command': '`python benchmarks/bench_se.py ' + ' '.join(sys.argv[1:] if argv is None else argv) + '`',
        'wall time': f'{time.perf_counter() - t0:.0f} s',
    }
    markdown, targets = render(rows, settings, header)
    chart_path = os.path.splitext(out)[0] + '.png'
    markdown += f'\n![se_zoo vs timm]({os.path.basename(chart_path)})\n'
    _atomic(out, lambda tmp: _write_text(tmp, markdown))
    chart(rows, chart_path, f'se_zoo vs timm on {header["device"]} ({header["precision"]}, {rounds} rounds)')
    for name, met, measured in targets:
        log(f'target {"met" if met else "NOT met"}: {name}: {measured}')
    log(f'wrote {out} and {chart_path}')


if __name__ == '__main__':
    main()
