"""Deployment speed on this CPU: timm eager, se_zoo optimized, PyTorch bf16, ONNX Runtime fp32 and int8 exports.

Method: in one process, every implementation of a comparison runs once per round, interleaved (A B A B ..., the
order rotating from round to round) so that load from other processes hits all of them alike; a ratio is the
median of the per-round ratios (in brackets the interquartile range, this machine's noise), a time the median
over rounds. Models are randomly initialised with realistic BatchNorm statistics (timings do not depend on the
weights), at 224x224; int8 is calibrated on skimage.data's photos (ranges only matter for accuracy, which is
measured separately on a Fashion-MNIST model with ``--accuracy-model``).

Sections:
- peak: the fastest kernel found per precision (large matrix products and convolutions, torch and ONNX Runtime),
  the reference for the GFLOP/s columns;
- models: se_resnet50, se_mobilenet_v3_large_100, se_efficientnet_b0, se_mobilenet_v2_100 at batch 1 and 8, plus
  torchvision's quantized MobileNetV3-Large (x86 backend) as the int8 anchor beside se_mobilenet_v3_large_100;
- int8 rules: each of ``se_zoo.deploy.INT8_RULES`` against the fp32 export, per model and batch;
- accuracy (with ``--accuracy-model DIR``): fp32 and int8 top-1 on the 10,000 Fashion-MNIST test images.

    python benchmarks/bench_deploy.py --accuracy-model runs/quickstart/best --out benchmarks/results_deploy.md
    python benchmarks/bench_deploy.py --rounds 3 --models se_mobilenet_v2_100 --out /tmp/smoke.md   # a smoke run

Writes the markdown table to ``--out`` and a chart next to it (same name, ``.png``).
"""
import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# glibc hands every freed block above its mmap threshold back to the OS at once, so each PyTorch call page-faults
# its large activations in again (measured here: timm eager se_resnet50 at batch 8, 485 ms -> 302 ms with these
# set). Raised thresholds keep freed memory in the process, as jemalloc/tcmalloc or a tuned inference server
# would; glibc reads them at start-up, hence the re-exec. ONNX Runtime allocates from its own arena either way.
MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': str(4 << 30), 'MALLOC_TRIM_THRESHOLD_': str(64 << 30)}
if __name__ == '__main__' and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import timm  # noqa: E402

import se_zoo  # noqa: E402
from se_zoo.deploy import DEFAULT_INT8_RULE, INT8_RULES, evaluate, export, load, quantize_onnx  # noqa: E402
from se_zoo.deploy.datasets import photos  # noqa: E402

MODELS = ('se_resnet50', 'se_mobilenet_v3_large_100', 'se_efficientnet_b0', 'se_mobilenet_v2_100')
BATCHES = (1, 8)
IMG_SIZE = 224
# The implementations of the models section, in table order, and the precision each is held to the peak of.
IMPLEMENTATIONS = {
    'timm eager': 'fp32',
    'se_zoo optimized': 'fp32',
    'torch bf16': 'bf16',
    'ORT fp32': 'fp32',
    'ORT int8': 'int8',
}
TV_INT8 = 'torchvision int8 MobileNetV3-L'
OPTIMIZED_EXPORT = 'fp32 export of optimize_for_inference'
ANCHOR_MODEL = 'se_mobilenet_v3_large_100'


# ---------------------------------------------------------------------------------------------------- measurement

def interleaved(fns: Dict[str, Callable[[], object]], rounds: int, min_sample_s: float) -> Dict[str, List[float]]:
    """Seconds per call of each fn: one sample (of enough calls to last ``min_sample_s``) per fn per round,
    the order rotating between rounds."""
    names = list(fns)
    reps = {}
    for name in names:
        fns[name]()
        start = time.perf_counter()
        fns[name]()
        reps[name] = max(1, math.ceil(min_sample_s / max(time.perf_counter() - start, 1e-6)))
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            # Both runtimes keep their default: worker threads spin for a while after their work is done (ONNX
            # Runtime's for several ms). A pause lets the last implementation's threads go to sleep before the next
            # one starts; with 10 ms instead of 50, the spinning took up to a third off whatever ran next.
            time.sleep(0.05)
            start = time.perf_counter()
            for _ in range(reps[name]):
                fns[name]()
            samples[name].append((time.perf_counter() - start) / reps[name])
    return samples


def ratios(num: List[float], den: List[float]) -> Tuple[float, float, float]:
    """Median and interquartile range of the per-round ratios num / den."""
    values = sorted(a / b for a, b in zip(num, den))
    if len(values) < 4:
        return statistics.median(values), values[0], values[-1]
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return statistics.median(values), q1, q3


def best_rate(fn: Callable[[], object], ops: float, repeats: int = 8) -> float:
    """ops / fastest call, in G(FL)OP/s: a kernel's peak is its best run, the one others disturbed least."""
    fn()
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return ops / best / 1e9


# ---------------------------------------------------------------------------------------------------- peak

def _ort_session(path: str, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def _single_node_model(path: str, node, inputs, outputs, initializers=()) -> str:
    import onnx
    graph = onnx.helper.make_graph([node], 'kernel', inputs, outputs, initializer=list(initializers))
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', 17)])
    onnx.save(model, path)
    return path


def measure_peak(workdir: Path, threads: int) -> Dict[str, Dict[str, float]]:
    """G(FL)OP/s of the fastest kernels found for each precision: ``{precision: {kernel: rate}}``."""
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    n = 2048
    mm_ops = 2 * n ** 3
    # A 3x3 convolution as in a ResNet's third stage (256 channels, 28x28, batch 8): compute-bound.
    cb, cc, hw = 8, 256, 28
    conv_ops = 2 * cb * cc * cc * 9 * hw * hw
    rng = np.random.default_rng(0)
    a32 = torch.randn(n, n)
    b32 = torch.randn(n, n)
    x = torch.randn(cb, cc, hw, hw)
    w = torch.randn(cc, cc, 3, 3) * 0.05
    rates: Dict[str, Dict[str, float]] = {'fp32': {}, 'bf16': {}, 'int8': {}}
    with torch.inference_mode():
        rates['fp32']['torch matmul (MKL) 2048^3'] = best_rate(lambda: a32 @ b32, mm_ops)
        xl, wl = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
        rates['fp32']['torch conv 3x3 256ch 28px b8 (oneDNN, channels_last)'] = best_rate(
            lambda: torch.nn.functional.conv2d(xl, wl, padding=1), conv_ops)
        a16, b16 = a32.bfloat16(), b32.bfloat16()
        rates['bf16']['torch matmul bf16 2048^3 (oneDNN)'] = best_rate(lambda: a16 @ b16, mm_ops)
        x16, w16 = xl.bfloat16(), wl.bfloat16()
        rates['bf16']['torch conv 3x3 bf16 (oneDNN, channels_last)'] = best_rate(
            lambda: torch.nn.functional.conv2d(x16, w16, padding=1), conv_ops)
        a8 = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        b8 = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        try:
            rates['int8']['torch _int_mm 2048^3'] = best_rate(lambda: torch._int_mm(a8, b8), mm_ops)
        except RuntimeError:  # not every torch build has a CPU kernel for it
            pass

    f32 = lambda name, shape: onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    mm = _ort_session(_single_node_model(
        str(workdir / 'matmul.onnx'), onnx.helper.make_node('MatMul', ['a', 'b'], ['c']),
        [f32('a', [n, n])], [f32('c', [n, n])], [numpy_helper.from_array(b32.numpy(), 'b')]), threads)
    feed = {'a': a32.numpy()}
    rates['fp32']['ORT MatMul (MLAS) 2048^3'] = best_rate(lambda: mm.run(None, feed), mm_ops)
    conv_path = _single_node_model(
        str(workdir / 'conv.onnx'), onnx.helper.make_node('Conv', ['x', 'w'], ['y'], pads=[1, 1, 1, 1]),
        [f32('x', [cb, cc, hw, hw])], [f32('y', [cb, cc, hw, hw])], [numpy_helper.from_array(w.numpy(), 'w')])
    conv = _ort_session(conv_path, threads)
    conv_feed = {'x': x.numpy()}
    rates['fp32']['ORT Conv 3x3 256ch 28px b8 (MLAS NCHWc)'] = best_rate(lambda: conv.run(None, conv_feed), conv_ops)

    u8 = lambda name, shape: onnx.helper.make_tensor_value_info(name, TensorProto.UINT8, shape)  # noqa: E731
    mmi = _ort_session(_single_node_model(
        str(workdir / 'matmulinteger.onnx'), onnx.helper.make_node('MatMulInteger', ['a', 'b'], ['c']),
        [u8('a', [n, n])], [onnx.helper.make_tensor_value_info('c', TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(rng.integers(-128, 127, (n, n), dtype=np.int8), 'b')]), threads)
    feed8 = {'a': rng.integers(0, 255, (n, n), dtype=np.uint8)}
    rates['int8']['ORT MatMulInteger u8s8 2048^3 (MLAS VNNI)'] = best_rate(lambda: mmi.run(None, feed8), mm_ops)

    class Reader:
        def __init__(self):
            self.batches = iter([conv_feed])

        def get_next(self):
            return next(self.batches, None)

    qconv_path = str(workdir / 'conv.int8.onnx')
    quantize_static(conv_path, qconv_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    qconv = _ort_session(qconv_path, threads)
    rates['int8']['ORT QLinearConv 3x3 (QDQ, per-channel)'] = best_rate(lambda: qconv.run(None, conv_feed), conv_ops)
    return rates


# ---------------------------------------------------------------------------------------------------- models

def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics and affine parameters as a trained network has them, not identity: timm zero-inits the
    last BN of each residual branch, which would make the network (and int8 ranges) degenerate."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(timm.create_model(name)).eval()


def model_flops(model: nn.Module) -> float:
    """FLOPs of one 224px image (torch.utils.flop_counter: convolutions and matrix products, 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, IMG_SIZE, IMG_SIZE))
    return float(counter.get_total_flops())


def photo_folder(root: Path) -> Path:
    """skimage.data's photos and their mirror images as an ImageFolder (one class), the calibration set."""
    folder = root / 'photos'
    (folder / 'photo').mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(photos()):
        image.save(folder / 'photo' / f'{i}.png')
        image.transpose(0).save(folder / 'photo' / f'{i}_mirrored.png')
    return folder


def photo_inputs(model: nn.Module, batch: int) -> torch.Tensor:
    from timm.data import create_transform, resolve_model_data_config
    transform = create_transform(**resolve_model_data_config(model))
    images = [transform(p) for p in photos()]
    return torch.stack([images[i % len(images)] for i in range(batch)])


def torchvision_int8_mobilenet_v3(calibration: torch.Tensor) -> nn.Module:
    """torchvision's quantizable MobileNetV3-Large: fused, x86 qconfig, calibrated on the photos, converted."""
    from torchvision.models.quantization import mobilenet_v3_large
    torch.backends.quantized.engine = 'x86'
    torch.manual_seed(0)
    model = randomize_batchnorm(mobilenet_v3_large(weights=None, quantize=False)).eval()
    model.fuse_model(is_qat=False)
    model.qconfig = torch.ao.quantization.get_default_qconfig('x86')
    torch.ao.quantization.prepare(model, inplace=True)
    with torch.inference_mode():
        model(calibration)
    torch.ao.quantization.convert(model, inplace=True)
    return model.eval()


@dataclass
class ModelRow:
    model: str
    batch: int
    gflop: float  # per batch
    times: Dict[str, float]  # implementation -> median seconds
    speedups: Dict[str, Tuple[float, float, float]]  # vs timm eager: median, q1, q3
    versus: Dict[str, Tuple[float, float, float]] = field(default_factory=dict)  # named extra ratios


def torch_fn(model: nn.Module, x: torch.Tensor, bf16: bool = False) -> Callable[[], object]:
    def run():
        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            return model(x)
    return run


def ort_fn(session, input_name: str, x: torch.Tensor) -> Callable[[], object]:
    feed = {input_name: x.numpy()}
    return lambda: session.run(None, feed)


def bench_models(args, workdir: Path, calibration_dir: Path) -> Tuple[List[ModelRow], List[dict]]:
    rows: List[ModelRow] = []
    rule_rows: List[dict] = []
    for name in args.models:
        started = time.perf_counter()
        model = build(name)
        flops = model_flops(model)
        folder = workdir / name
        export(model, folder, int8=True, calibration=calibration_dir, calibration_samples=64, progress=False)
        fp32, int8 = (load(folder, precision=p, num_threads=args.threads) for p in ('fp32', 'int8'))
        optimized = se_zoo.optimize_for_inference(model)
        rule_sessions = {'ORT fp32': fp32.session}
        if not args.skip_rules:
            # The same export made from optimize_for_inference(model) (BatchNorm folded, fused SE epilogue):
            # ONNX Runtime does its own fusions, so this shows whether handing it the rewritten model pays.
            export(optimized, workdir / f'{name}.optimized', progress=False)
            rule_sessions[OPTIMIZED_EXPORT] = _ort_session(str(workdir / f'{name}.optimized' / 'model.onnx'),
                                                           args.threads)
            calibration = [photo_inputs(model, 8).numpy()]
            for rule in INT8_RULES:
                path = workdir / f'{name}.{rule}.onnx'
                quantize_onnx(folder / 'model.onnx', path, calibration, rule=rule)
                rule_sessions[rule] = _ort_session(str(path), args.threads)
        tv = torchvision_int8_mobilenet_v3(photo_inputs(model, 8)) if name == ANCHOR_MODEL else None
        print(f'{name}: built, exported and quantized in {time.perf_counter() - started:.0f} s', flush=True)

        for batch in BATCHES:
            x = photo_inputs(model, batch)
            x_last = x.contiguous(memory_format=torch.channels_last)
            fns = {
                'timm eager': torch_fn(model, x),
                'se_zoo optimized': torch_fn(optimized, x_last),
                'torch bf16': torch_fn(optimized, x_last, bf16=True),
                'ORT fp32': ort_fn(fp32.session, fp32.config.input_name, x),
                'ORT int8': ort_fn(int8.session, int8.config.input_name, x),
            }
            if tv is not None:
                fns[TV_INT8] = torch_fn(tv, x)
            samples = interleaved(fns, args.rounds, args.min_sample_s)
            base = samples['timm eager']
            row = ModelRow(
                model=name, batch=batch, gflop=flops * batch / 1e9,
                times={k: statistics.median(v) for k, v in samples.items()},
                speedups={k: ratios(base, v) for k, v in samples.items()})
            row.versus['int8 / fp32 export'] = ratios(samples['ORT fp32'], samples['ORT int8'])
            if tv is not None:
                row.versus['int8 / torchvision int8'] = ratios(samples[TV_INT8], samples['ORT int8'])
            rows.append(row)
            print(f'  batch {batch}: ' + '  '.join(f'{k} {1e3 * t:.1f} ms' for k, t in row.times.items()), flush=True)

            if len(rule_sessions) > 1:
                rule_fns = {k: ort_fn(s, 'input', x) for k, s in rule_sessions.items()}
                rule_samples = interleaved(rule_fns, args.rule_rounds, args.min_sample_s)
                rule_rows.append(dict(
                    model=name, batch=batch,
                    ms={k: 1e3 * statistics.median(v) for k, v in rule_samples.items()},
                    speedups={k: ratios(rule_samples['ORT fp32'], v) for k, v in rule_samples.items() if k != 'ORT fp32'}))
    return rows, rule_rows


# ---------------------------------------------------------------------------------------------------- report

def _cells(row, impls, cell) -> List[str]:
    """One table cell per implementation: ``cell(impl)`` where the row measured it, else empty."""
    return [cell(impl) if impl in row.times else '' for impl in impls]


def _fmt_ratio(value: Tuple[float, float, float]) -> str:
    median, q1, q3 = value
    return f'{median:.2f}x ({q1:.2f}–{q3:.2f})'


def write_report(args, peak, rows, rule_rows, accuracy, wall_s: float) -> str:
    peak_best = {p: max(kernels.items(), key=lambda kv: kv[1]) for p, kernels in peak.items() if kernels}
    lines = [
        '# se_zoo deployment: ONNX Runtime fp32 and int8 against PyTorch on this CPU',
        '',
        f'- device: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, '
        f'{args.threads} threads for torch and ONNX Runtime',
        f'- software: torch {torch.__version__}, timm {timm.__version__}, onnxruntime {_version("onnxruntime")}, '
        f'onnx {_version("onnx")}, se_zoo {se_zoo.__version__}, Python {platform.python_version()}',
        f'- method: {args.rounds} interleaved rounds per comparison, {IMG_SIZE}x{IMG_SIZE} input, random weights with '
        f'realistic BatchNorm statistics; int8 = `se_zoo.deploy` rule `{DEFAULT_INT8_RULE}` calibrated on '
        f"skimage.data's photos; both runtimes with their default threading, 50 ms pause between implementations; "
        f"glibc malloc thresholds raised ({', '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())})",
        f'- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC',
        f'- command: `python benchmarks/bench_deploy.py {" ".join(sys.argv[1:])}`',
        f'- wall time: {wall_s:.0f} s',
        '',
        'Speed-ups are medians of per-round ratios (timm eager time / implementation time; > 1: faster), in brackets '
        "the interquartile range of the per-round ratios, this machine's noise; times are ms per batch (median). "
        '"se_zoo optimized" is `se_zoo.optimize_for_inference(model)` with channels_last input; "torch bf16" is the '
        'same under `torch.autocast("cpu", torch.bfloat16)`; "ORT" is the `se_zoo.deploy.export` folder run by '
        '`se_zoo.deploy.load`. GFLOP/s count the model\'s convolutions and matrix products (2 per MAC, int8 ops '
        'alike) per second; "% peak" is against the measured peak of the precision the implementation computes in.',
        '',
        '## Measured peak per precision',
        '',
        '| precision | kernel | G(FL)OP/s | |',
        '|---|---|---:|---|',
    ]
    for precision, kernels in peak.items():
        for kernel, rate in sorted(kernels.items(), key=lambda kv: -kv[1]):
            mark = '**peak**' if peak_best[precision][0] == kernel else ''
            lines.append(f'| {precision} | {kernel} | {rate:.0f} | {mark} |')
    lines += ['', '## Speed', '']
    impls = list(IMPLEMENTATIONS) + ([TV_INT8] if any(TV_INT8 in r.times for r in rows) else [])
    lines.append('| model | batch | ' + ' | '.join(impls) + ' |')
    lines.append('|---|---:|' + '---:|' * len(impls))
    for row in rows:
        cells = _cells(row, impls, lambda impl: f'{1e3 * row.times[impl]:.1f} ms<br>{_fmt_ratio(row.speedups[impl])}')
        lines.append(f'| {row.model} | {row.batch} | ' + ' | '.join(cells) + ' |')
    lines += ['', '### GFLOP/s and share of the measured peak', '']
    lines.append('| model | batch | GFLOP/batch | ' + ' | '.join(impls) + ' |')
    lines.append('|---|---:|---:|' + '---:|' * len(impls))
    for row in rows:
        def share_of_peak(impl: str) -> str:
            rate = row.gflop / row.times[impl]
            return f'{rate:.0f} ({100 * rate / peak_best[IMPLEMENTATIONS.get(impl, "int8")][1]:.0f}%)'
        cells = _cells(row, impls, share_of_peak)
        lines.append(f'| {row.model} | {row.batch} | {row.gflop:.1f} | ' + ' | '.join(cells) + ' |')
    lines += ['', '### int8 against the fp32 export and against torchvision\'s int8', '']
    lines.append('| model | batch | int8 / fp32 export | int8 / torchvision int8 MobileNetV3-L |')
    lines.append('|---|---:|---:|---:|')
    for row in rows:
        tv = row.versus.get('int8 / torchvision int8')
        lines.append(f'| {row.model} | {row.batch} | {_fmt_ratio(row.versus["int8 / fp32 export"])} | '
                     f'{_fmt_ratio(tv) if tv else ""} |')
    if rule_rows:
        rules = list(rule_rows[0]['speedups'])
        lines += ['', '## ONNX variants: speed-up over the fp32 export', '',
                  f'{args.rule_rounds} interleaved rounds. Each rule of `se_zoo.deploy.INT8_RULES` quantizes the same '
                  'fp32 export (see `se_zoo/deploy/quantize.py`); "fp32 export of optimize_for_inference" exports '
                  '`se_zoo.optimize_for_inference(model)` instead of the model. ms per batch, then the median '
                  'per-round ratio fp32 export / variant.', '']
        lines.append('| model | batch | fp32 | ' + ' | '.join(r if r == OPTIMIZED_EXPORT else f'`{r}`' for r in rules) + ' |')
        lines.append('|---|---:|---:|' + '---:|' * len(rules))
        for rr in rule_rows:
            cells = [f'{rr["ms"][r]:.1f} ms<br>{_fmt_ratio(rr["speedups"][r])}' for r in rules]
            lines.append(f'| {rr["model"]} | {rr["batch"]} | {rr["ms"]["ORT fp32"]:.1f} ms | ' + ' | '.join(cells) + ' |')
        lines.append('')
        lines.append('Worst case over models and batches (an int8 rule must never be slower than fp32): ' + ', '.join(
            f'`{r}` {min(rr["speedups"][r][0] for rr in rule_rows):.2f}x' for r in rules if r != OPTIMIZED_EXPORT) + '.')
    if accuracy:
        lines += ['', '## int8 accuracy on real data', '',
                  f'`{accuracy["model"]}` exported with `int8=True, calibration="fashion-mnist"` '
                  f'({accuracy["calibration_samples"]} training images), evaluated on the '
                  f'{accuracy["images"]} Fashion-MNIST test images by ONNX Runtime:', '',
                  '| fp32 | int8 | int8 - fp32 |', '|---:|---:|---:|',
                  f'| {accuracy["fp32"]:.2f}% | {accuracy["int8"]:.2f}% | {accuracy["int8"] - accuracy["fp32"]:+.2f} points |']
    return '\n'.join(lines) + '\n'


def write_chart(rows: List[ModelRow], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    impls = [i for i in list(IMPLEMENTATIONS) + [TV_INT8] if any(i in r.speedups for r in rows)]
    fig, axes = plt.subplots(1, len(BATCHES), figsize=(6.5 * len(BATCHES), 4.2), sharey=True)
    for ax, batch in zip(np.atleast_1d(axes), BATCHES):
        batch_rows = [r for r in rows if r.batch == batch]
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            xs = [j + (i - (len(impls) - 1) / 2) * width for j, r in enumerate(batch_rows) if impl in r.speedups]
            values = [r.speedups[impl] for r in batch_rows if impl in r.speedups]
            ax.bar(xs, [v[0] for v in values], width,
                   yerr=[[v[0] - v[1] for v in values], [v[2] - v[0] for v in values]], label=impl, capsize=2)
        ax.axhline(1.0, color='black', linewidth=0.8)
        ax.axhline(2.0, color='grey', linewidth=0.8, linestyle='--')
        ax.set_xticks(range(len(batch_rows)))
        ax.set_xticklabels([r.model.replace('se_', '').replace('_100', '') for r in batch_rows], fontsize=8)
        ax.set_title(f'batch {batch}')
    np.atleast_1d(axes)[0].set_ylabel('speed-up over timm eager (median, IQR)')
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.suptitle('se_zoo deployment on this CPU (dashed: the 2x target of the fp32 export)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _version(module: str) -> str:
    from importlib.metadata import version
    return version(module)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='benchmarks/results_deploy.md')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=11)
    parser.add_argument('--min-sample-s', type=float, default=0.05,
                        help='each sample repeats the call until it lasts this long')
    parser.add_argument('--models', nargs='+', default=list(MODELS))
    parser.add_argument('--rule-rounds', type=int, default=7, help='rounds of the int8 rules section')
    parser.add_argument('--skip-rules', action='store_true', help='skip the int8 rules section')
    parser.add_argument('--accuracy-model', default=None, metavar='DIR',
                        help='a Fashion-MNIST model folder (se-zoo finetune best/) to measure int8 accuracy on')
    parser.add_argument('--calibration-samples', type=int, default=256)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore')  # exporter and torch.ao deprecation notices; nothing here depends on them
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's quantizer logs advice through the root logger
    import onnxruntime as ort
    ort.set_default_logger_severity(3)

    with tempfile.TemporaryDirectory(prefix='bench_deploy_') as tmp:
        workdir = Path(tmp)
        peak = measure_peak(workdir, args.threads)
        for precision, kernels in peak.items():
            print(f'peak {precision}: ' + ', '.join(f'{k} {v:.0f}' for k, v in kernels.items()), flush=True)
        rows, rule_rows = bench_models(args, workdir, photo_folder(workdir))
        accuracy = None
        if args.accuracy_model:
            folder = workdir / 'accuracy'
            export(args.accuracy_model, folder, int8=True, calibration='fashion-mnist',
                   calibration_samples=args.calibration_samples, progress=False)
            measured = evaluate(folder, 'fashion-mnist', progress=False)
            accuracy = dict(model=args.accuracy_model, calibration_samples=args.calibration_samples, images=10000,
                            **measured)
            print(f'accuracy: {measured}', flush=True)
    report = write_report(args, peak, rows, rule_rows, accuracy, time.perf_counter() - started)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    write_chart(rows, out.with_suffix('.png'))
    print(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
