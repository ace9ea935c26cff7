"""Deployment speed and accuracy on this CPU: timm eager against the exports of ``se_zoo.deploy`` in every
precision (fp32 and int8 on ONNX Runtime, bf16 on OpenVINO), the precision ``precision='auto'`` picks, each
precision's share of its measured peak, and fp32/bf16/int8 top-1 of Fashion-MNIST-trained SE networks.

Method (``benchmarks/measure.py``, shared with bench_se.py): one process, the glibc allocator thresholds of
``measure.MALLOC_ENV``, 2 threads for every runtime; every implementation of a comparison runs once per round,
interleaved (A B A B ..., the order rotating from round to round) so that load from other processes hits all of
them alike; a ratio is the median of the per-round ratios (in brackets the interquartile range, this machine's
noise), a time the median over rounds. The export is timed by ``se_zoo.deploy.export(precision='auto')`` itself,
handed this benchmark's timer: the rounds that choose the default precision are the rounds reported, with timm
eager and PyTorch bf16 interleaved into them. Speed models are randomly initialised with realistic BatchNorm
statistics at 224x224 (timings do not depend on the weights); int8 is calibrated on skimage.data's photos.

Sections:
- peak: the fastest kernel found per precision (large matrix products and convolutions; torch, ONNX Runtime and
  OpenVINO), the reference for the "% of peak" figures;
- models: se_resnet50, se_mobilenet_v3_large_100, se_efficientnet_b0, se_mobilenet_v2_100 at batch 1 and 8;
- accuracy: one small network per SE family fine-tuned briefly on Fashion-MNIST (``se_zoo.finetune``), exported
  with ``precision='auto'`` and evaluated in fp32, bf16 and int8 on the 10,000 test images;
- int8 rules (``--rules``): each of ``se_zoo.deploy.INT8_RULES`` against the fp32 export.

    python benchmarks/bench_deploy.py --out benchmarks/results_deploy.md
    python benchmarks/bench_deploy.py --rounds 3 --models se_mobilenet_v2_100 --no-accuracy --out /tmp/smoke.md

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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402  (benchmarks/measure.py)

if __name__ == '__main__':
    measure.use_benchmark_allocator()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import timm  # noqa: E402

import se_zoo  # noqa: E402
from se_zoo.data import photo_batch, photos  # noqa: E402
from se_zoo.deploy import DEFAULT_INT8_RULE, INT8_RULES, export, quantize_onnx  # noqa: E402
from se_zoo.deploy.runtime import open_runner  # noqa: E402
from measure import randomize_batchnorm, ratio_quartiles  # noqa: E402

MODELS = ('se_resnet50', 'se_mobilenet_v3_large_100', 'se_efficientnet_b0', 'se_mobilenet_v2_100')
BATCHES = (1, 8)
IMG_SIZE = 224
# The implementations of the models section, in table order, and the precision whose peak each is held to.
IMPLEMENTATIONS = {
    'timm eager': 'fp32',
    'PyTorch bf16': 'bf16',
    'ORT fp32': 'fp32',
    'OpenVINO bf16': 'bf16',
    'ORT int8': 'int8',
}
# The implementation that runs each precision of an export (what se_zoo.deploy.load opens).
EXPORT_IMPLEMENTATION = {'fp32': 'ORT fp32', 'bf16': 'OpenVINO bf16', 'int8': 'ORT int8'}
# One small network per SE family, trained briefly on Fashion-MNIST: (label, model, model_kwargs, img_size).
ACCURACY_MODELS = (
    ('SE-ResNet', 'se_resnet18', {'channels': (24, 48, 96, 192)}, 32),
    ('SE-MobileNetV3', 'se_mobilenet_v3_large_075', {}, 32),
    ('SE-EfficientNet', 'se_efficientnet_b0', {}, 32),
    ('SE-MobileNetV2', 'se_mobilenet_v2_050', {}, 32),
)


# ---------------------------------------------------------------------------------------------------- peak

def best_rate(fn: Callable[[], object], ops: float, repeats: int = 8) -> float:
    """ops / fastest call, in G(FL)OP/s: a kernel's peak is its best run, the one others disturbed least."""
    fn()
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return ops / best / 1e9


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

    # The same convolution in OpenVINO, bf16 and f32 named explicitly (it would pick bf16 by itself here).
    for precision, label in (('bf16', 'bf16'), ('f32', 'fp32')):
        run = open_runner(conv_path, 'openvino', 'bf16' if precision == 'bf16' else 'fp32', input_name='x',
                          num_threads=threads)
        rates[label][f'OpenVINO Conv 3x3 256ch 28px b8 ({precision})'] = best_rate(lambda: run(conv_feed['x']), conv_ops)
    return rates


# ---------------------------------------------------------------------------------------------------- models

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
    """The photos through the model's eval transform, repeated to ``batch``: what export's timer runs too."""
    images = photo_batch(model)
    return images[torch.arange(batch) % len(images)].contiguous()


@dataclass
class ModelRow:
    model: str
    batch: int
    gflop: float  # per batch
    times: Dict[str, float]  # implementation -> median seconds
    speedups: Dict[str, Tuple[float, float, float]]  # vs timm eager: median, q1, q3
    over_fp32: Dict[str, Tuple[float, float, float]]  # export precisions vs the fp32 export
    auto: str = ''  # the precision export(precision='auto') chose for the model (batch sizes 1 and 8)
    auto_notes: Dict[str, str] = field(default_factory=dict)


def torch_fn(model: nn.Module, x: torch.Tensor, bf16: bool = False) -> Callable[[], object]:
    def run():
        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            return model(x)
    return run


def bench_models(args, workdir: Path, calibration_dir: Path) -> Tuple[List[ModelRow], List[dict]]:
    rows: List[ModelRow] = []
    rule_rows: List[dict] = []
    for name in args.models:
        started = time.perf_counter()
        model = build(name)
        flops = model_flops(model)
        optimized = se_zoo.optimize_for_inference(model)
        samples_by_batch: Dict[int, Dict[str, List[float]]] = {}
        pending = list(BATCHES)

        def timer(fns: Dict[str, Callable[[], object]]) -> Dict[str, List[float]]:
            # export() times its precisions at each batch size in turn; timm eager and PyTorch bf16 join the rounds
            batch = pending.pop(0)
            x = photo_inputs(model, batch)
            x_last = x.contiguous(memory_format=torch.channels_last)
            everything = {'timm eager': torch_fn(model, x), 'PyTorch bf16': torch_fn(optimized, x_last, bf16=True)}
            everything.update({EXPORT_IMPLEMENTATION[p]: fn for p, fn in fns.items()})
            samples = measure.interleaved(everything, args.rounds, min_sample_s=args.min_sample_s)
            samples_by_batch[batch] = samples
            return {p: samples[EXPORT_IMPLEMENTATION[p]] for p in fns}

        folder = workdir / name
        result = export(model, folder, calibration=calibration_dir, calibration_samples=64,
                        batch_sizes=BATCHES, num_threads=args.threads, timer=timer, progress=False)
        selection = result.config.selection
        notes = {p: c.get('reason', '') for p, c in selection['candidates'].items()}
        notes.update(selection.get('skipped', {}))
        print(f'{name}: exported, timed and chosen ({result.precision}) in {time.perf_counter() - started:.0f} s; '
              f'{notes}', flush=True)
        for batch in BATCHES:
            samples = samples_by_batch[batch]
            base = samples['timm eager']
            fp32 = samples['ORT fp32']
            row = ModelRow(
                model=name, batch=batch, gflop=flops * batch / 1e9,
                times={k: statistics.median(v) for k, v in samples.items()},
                speedups={k: ratio_quartiles(base, v) for k, v in samples.items()},
                over_fp32={EXPORT_IMPLEMENTATION[p]: ratio_quartiles(fp32, samples[EXPORT_IMPLEMENTATION[p]])
                           for p in result.files},
                auto=result.precision, auto_notes=notes)
            rows.append(row)
            print(f'  batch {batch}: ' + '  '.join(f'{k} {1e3 * t:.1f} ms' for k, t in row.times.items()), flush=True)

        if args.rules:
            rule_sessions = {'ORT fp32': open_runner(folder / 'model.onnx', 'onnxruntime', 'fp32',
                                                     num_threads=args.threads)}
            calibration = [photo_inputs(model, 8).numpy()]
            for rule in INT8_RULES:
                path = workdir / f'{name}.{rule}.onnx'
                quantize_onnx(folder / 'model.onnx', path, calibration, rule=rule)
                rule_sessions[rule] = open_runner(path, 'onnxruntime', 'int8', num_threads=args.threads)
            for batch in BATCHES:
                x = photo_inputs(model, batch).numpy()
                rule_samples = measure.interleaved({k: (lambda r=r: r(x)) for k, r in rule_sessions.items()},
                                                   args.rule_rounds, min_sample_s=args.min_sample_s)
                rule_rows.append(dict(
                    model=name, batch=batch,
                    ms={k: 1e3 * statistics.median(v) for k, v in rule_samples.items()},
                    speedups={k: ratio_quartiles(rule_samples['ORT fp32'], v)
                              for k, v in rule_samples.items() if k != 'ORT fp32'}))
    return rows, rule_rows


# ---------------------------------------------------------------------------------------------------- accuracy

def bench_accuracy(args, workdir: Path) -> List[dict]:
    """Fine-tune one small network per family on Fashion-MNIST, export it with precision='auto' judged on the
    10,000 labelled test images, and report every precision's top-1."""
    from se_zoo.finetune import finetune
    results = []
    for label, name, kwargs, size in ACCURACY_MODELS:
        if args.families and label not in args.families:
            continue
        started = time.perf_counter()
        trained = finetune(
            name, 'fashion-mnist', output=str(workdir / f'train_{name}'), epochs=args.train_epochs, img_size=size,
            model_kwargs=dict(kwargs), train_samples=args.train_samples, scale=(1.0, 1.0), lr=2e-3,
            progress=False, workers=0)
        trained_s = time.perf_counter() - started
        result = export(str(trained.best_dir), workdir / f'fashion_{name}', calibration='fashion-mnist',
                        evaluate='fashion-mnist', batch_sizes=BATCHES, num_threads=args.threads, progress=False)
        kw = ', '.join(f'{k}={v}' for k, v in kwargs.items())
        results.append(dict(family=label, model=f'{name}({kw})' if kw else name, img_size=size,
                            accuracy=result.accuracy, auto=result.precision,
                            speedups={p: c.get('speedup_over_fp32', {})
                                      for p, c in result.config.selection['candidates'].items()},
                            train_s=trained_s, total_s=time.perf_counter() - started))
        print(f'accuracy {label} {name}: {result.accuracy}, auto picks {result.precision} '
              f'({time.perf_counter() - started:.0f} s)', flush=True)
    return results


# ---------------------------------------------------------------------------------------------------- report

def _fmt_ratio(value: Tuple[float, float, float]) -> str:
    median, q1, q3 = value
    return f'{median:.2f}x ({q1:.2f}–{q3:.2f})'


def _peak_best(peak) -> Dict[str, Tuple[str, float]]:
    return {p: max(kernels.items(), key=lambda kv: kv[1]) for p, kernels in peak.items() if kernels}


def targets(rows: List[ModelRow], accuracy: List[dict], peak) -> List[Tuple[str, str, bool]]:
    """The deployment targets, measured: (target, result, held)."""
    out = []
    picks = [(r, EXPORT_IMPLEMENTATION[r.auto]) for r in rows]
    low = [f'{r.model} b{r.batch} {r.speedups[i][0]:.2f}x' for r, i in picks if r.speedups[i][0] < 2.5]
    values = [r.speedups[i][0] for r, i in picks]
    if values:
        out.append(("auto's pick >= 2.5x timm eager, batch 1 and 8, every model",
                    f'{min(values):.2f}–{max(values):.2f}x' + (f'; below: {", ".join(low)}' if low else ''), not low))
    if accuracy:
        lost = [f'{a["family"]} {a["auto"]} {a["accuracy"][a["auto"]] - a["accuracy"]["fp32"]:+.2f}' for a in accuracy]
        held = all(a['accuracy'][a['auto']] >= a['accuracy']['fp32'] - 0.5 for a in accuracy)
        out.append(("auto's pick within 0.5 top-1 points of fp32 on the Fashion-MNIST model of its family",
                    ', '.join(lost) + ' points', held))
        # the speed model's pick, judged on the trained model of its family
        family_of = {'se_resnet50': 'SE-ResNet', 'se_mobilenet_v3_large_100': 'SE-MobileNetV3',
                     'se_efficientnet_b0': 'SE-EfficientNet', 'se_mobilenet_v2_100': 'SE-MobileNetV2'}
        by_family = {a['family']: a for a in accuracy}
        cross = []
        for model in dict.fromkeys(r.model for r in rows):
            pick = next(r.auto for r in rows if r.model == model)
            a = by_family.get(family_of.get(model))
            if a is not None and pick in a['accuracy']:
                cross.append((model, pick, a['accuracy'][pick] - a['accuracy']['fp32']))
        if cross:
            out.append(("the 224px models' pick, within 0.5 points of fp32 on the trained model of the family",
                        ', '.join(f'{m} {p} {d:+.2f}' for m, p, d in cross) + ' points',
                        all(d >= -0.5 for _, _, d in cross)))
    slower = [f'{r.model} b{r.batch} {r.over_fp32[i][0]:.2f}x' for r, i in picks if r.over_fp32[i][0] < 1.0]
    if picks:
        out.append(('no default export slower than its own fp32 file',
                    'slowest pick over fp32: ' + f'{min(r.over_fp32[i][0] for r, i in picks):.2f}x'
                    + (f'; below 1: {", ".join(slower)}' if slower else ''), not slower))
    best = _peak_best(peak)
    for r, impl in picks:
        if r.model == 'se_resnet50' and r.batch == 8:
            precision = IMPLEMENTATIONS[impl]
            share = r.gflop / r.times[impl] / best[precision][1]
            out.append(('se_resnet50 batch 8 in the chosen precision >= 60% of its peak',
                        f'{r.auto}: {r.gflop / r.times[impl]:.0f} G(FL)OP/s = {100 * share:.0f}% of '
                        f'{best[precision][1]:.0f}', share >= 0.6))
    return out


def write_report(args, peak, rows, rule_rows, accuracy, wall_s: float, commands: Sequence[str] = (),
                 loads: Sequence[Tuple[float, float, float]] = ()) -> str:
    best = _peak_best(peak)
    commands = list(commands) or [f'python benchmarks/bench_deploy.py {" ".join(sys.argv[1:])}']
    lines = [
        '# se_zoo deployment on this CPU: every precision of an export against timm eager',
        '',
        f'- device: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, '
        f'{args.threads} threads for torch, ONNX Runtime and OpenVINO',
        f'- software: torch {torch.__version__}, timm {timm.__version__}, onnxruntime {_version("onnxruntime")}, '
        f'openvino {_version("openvino")}, onnx {_version("onnx")}, se_zoo {se_zoo.__version__}, '
        f'Python {platform.python_version()}',
        f'- method: `benchmarks/measure.py` (shared with bench_se.py): {args.rounds} interleaved rounds per '
        f'comparison, 50 ms pause before each sample, glibc malloc thresholds raised '
        f"({', '.join(f'{k}={v}' for k, v in measure.MALLOC_ENV.items())}); {IMG_SIZE}x{IMG_SIZE} input, random "
        f'weights with realistic BatchNorm statistics; int8 = `se_zoo.deploy` rule `{DEFAULT_INT8_RULE}` '
        f"calibrated on skimage.data's photos",
        f'- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC',
        '- command: ' + ' and '.join(f'`{c}`' for c in commands),
        f'- wall time: {wall_s:.0f} s; load average (1, 5, 15 min) at the end of each run: '
        + '; '.join(', '.join(f'{v:.1f}' for v in load) for load in (list(loads) or [os.getloadavg()]))
        + ' on 2 cores (other processes shared the machine)',
        '',
        'Each model is exported by `se_zoo.deploy.export(model, precision="auto", batch_sizes=(1, 8))`, handed this '
        "benchmark's timer: the rounds below are the ones auto chose from (timm eager and PyTorch bf16 interleaved "
        'into them), so every figure is measured once. "ORT" is ONNX Runtime, "PyTorch bf16" is '
        '`se_zoo.optimize_for_inference(model)`, channels_last, under `torch.autocast("cpu", torch.bfloat16)`. Per '
        'cell: ms per batch (median over rounds); speed-up over timm eager, the median of per-round ratios '
        "(interquartile range, this machine's noise); G(FL)OP/s of the model's convolutions and matrix products "
        "(2 per MAC, int8 ops alike) and their share of the measured peak of the precision computed in.",
        '',
        '## Measured peak per precision',
        '',
        '| precision | kernel | G(FL)OP/s | |',
        '|---|---|---:|---|',
    ]
    for precision, kernels in peak.items():
        for kernel, rate in sorted(kernels.items(), key=lambda kv: -kv[1]):
            mark = '**peak**' if best[precision][0] == kernel else ''
            lines.append(f'| {precision} | {kernel} | {rate:.0f} | {mark} |')
    impls = list(IMPLEMENTATIONS)
    lines += ['', '## Speed', '',
              '| model | batch | GFLOP/batch | ' + ' | '.join(impls) + ' | auto picks | pick / fp32 export |',
              '|---|---:|---:|' + '---:|' * len(impls) + '---|---:|']
    for row in rows:
        cells = []
        for impl in impls:
            if impl not in row.times:
                cells.append('')
                continue
            rate = row.gflop / row.times[impl]
            share = 100 * rate / best[IMPLEMENTATIONS[impl]][1]
            cells.append(f'{1e3 * row.times[impl]:.1f} ms<br>{_fmt_ratio(row.speedups[impl])}<br>'
                         f'{rate:.0f} ({share:.0f}%)')
        pick = EXPORT_IMPLEMENTATION[row.auto]
        lines.append(f'| {row.model} | {row.batch} | {row.gflop:.1f} | ' + ' | '.join(cells)
                     + f' | **{row.auto}** ({pick}) | {_fmt_ratio(row.over_fp32[pick])} |')
    lines += ['', "Why auto passed over a precision (deploy.json's `selection`):", '']
    for model in dict.fromkeys(r.model for r in rows):
        notes = next(r.auto_notes for r in rows if r.model == model)
        text = '; '.join(f'{p}: {n}' for p, n in notes.items() if n) or 'nothing passed over'
        lines.append(f'- {model}: {text}')
    if accuracy:
        lines += ['', '## Accuracy of every precision on Fashion-MNIST', '',
                  f'One small network per SE family fine-tuned by `se_zoo.finetune.finetune` ({args.train_epochs} '
                  f'epoch(s) on {args.train_samples or 60000} training images, no augmentation but flips), exported '
                  'with `precision="auto", calibration="fashion-mnist"` (256 training images), '
                  '`evaluate="fashion-mnist"`: top-1 on all 10,000 test images, each precision on its runtime. '
                  "auto's pick here is for the trained network at its own input size, timed at batch 1 and 8.", '',
                  '| family | model | input | fp32 | bf16 | int8 | bf16 - fp32 | int8 - fp32 | auto picks |',
                  '|---|---|---:|---:|---:|---:|---:|---:|---|']
        for a in accuracy:
            acc = a['accuracy']
            diff = lambda p: f'{acc[p] - acc["fp32"]:+.2f}' if p in acc else ''  # noqa: E731
            cell = lambda p: f'{acc[p]:.2f}%' if p in acc else ''  # noqa: E731
            lines.append(f'| {a["family"]} | `{a["model"]}` | {a["img_size"]} px | {cell("fp32")} | {cell("bf16")} | '
                         f'{cell("int8")} | {diff("bf16")} | {diff("int8")} | {a["auto"]} |')
    if rule_rows:
        rules = list(rule_rows[0]['speedups'])
        lines += ['', '## int8 rules: speed-up over the fp32 export', '',
                  f'{args.rule_rounds} interleaved rounds of their own (so the fp32 times here are a separate '
                  'measurement from the table above). ms per batch, then the median per-round ratio fp32 / rule.', '',
                  '| model | batch | fp32 | ' + ' | '.join(f'`{r}`' for r in rules) + ' |',
                  '|---|---:|---:|' + '---:|' * len(rules)]
        for rr in rule_rows:
            cells = [f'{rr["ms"][r]:.1f} ms<br>{_fmt_ratio(rr["speedups"][r])}' for r in rules]
            lines.append(f'| {rr["model"]} | {rr["batch"]} | {rr["ms"]["ORT fp32"]:.1f} ms | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Targets', '', '| target | measured | held? |', '|---|---|---|']
    for target, result, held in targets(rows, accuracy, peak):
        lines.append(f'| {target} | {result} | {"yes" if held else "**no**"} |')
    return '\n'.join(lines) + '\n'


def write_chart(rows: List[ModelRow], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    impls = [i for i in IMPLEMENTATIONS if any(i in r.speedups for r in rows)]
    fig, axes = plt.subplots(1, len(BATCHES), figsize=(6.5 * len(BATCHES), 4.2), sharey=True)
    for ax, batch in zip(np.atleast_1d(axes), BATCHES):
        batch_rows = [r for r in rows if r.batch == batch]
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            xs = [j + (i - (len(impls) - 1) / 2) * width for j, r in enumerate(batch_rows) if impl in r.speedups]
            values = [r.speedups[impl] for r in batch_rows if impl in r.speedups]
            ax.bar(xs, [v[0] for v in values], width,
                   yerr=[[v[0] - v[1] for v in values], [v[2] - v[0] for v in values]], label=impl, capsize=2)
        for j, r in enumerate(batch_rows):
            ax.annotate(f'auto: {r.auto}', (j, r.speedups[EXPORT_IMPLEMENTATION[r.auto]][0]), fontsize=7,
                        ha='center', va='bottom', xytext=(0, 8), textcoords='offset points')
        ax.axhline(1.0, color='black', linewidth=0.8)
        ax.axhline(2.5, color='grey', linewidth=0.8, linestyle='--')
        ax.set_xticks(range(len(batch_rows)))
        ax.set_xticklabels([r.model.replace('se_', '').replace('_100', '') for r in batch_rows], fontsize=8)
        ax.set_title(f'batch {batch}')
    np.atleast_1d(axes)[0].set_ylabel('speed-up over timm eager (median, IQR)')
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.suptitle("se_zoo deployment on this CPU (dashed: the 2.5x target of auto's pick)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _render(args) -> int:
    """Write the report from pickled runs: the speed sections of one, the accuracy section of another."""
    import pickle
    measured: Dict[str, object] = dict(peak={}, rows=[], rule_rows=[], accuracy=[])
    commands = []
    loads = []
    args.wall_s = 0.0
    for path in args.render:
        kept = pickle.loads(Path(path).read_bytes())
        commands.append('python benchmarks/bench_deploy.py ' + ' '.join(kept.get('argv', [])))
        args.wall_s += kept.get('wall_s', 0.0)
        if 'load' in kept:
            loads.append(kept['load'])
        if kept.get('rows'):
            args.rounds = kept.get('rounds', args.rounds)
        if kept.get('accuracy'):
            args.train_epochs, args.train_samples = kept.get('train', (args.train_epochs, args.train_samples))
        for key in measured:
            if kept.get(key):
                # accuracy sections of several runs (one family each) add up; the speed sections come from one
                measured[key] = measured[key] + kept[key] if key == 'accuracy' else kept[key]
    report = write_report(args, measured['peak'], measured['rows'], measured['rule_rows'], measured['accuracy'],
                          args.wall_s, commands=commands, loads=loads)
    out = Path(args.out)
    out.write_text(report)
    if measured['rows']:
        write_chart(measured['rows'], out.with_suffix('.png'))
    print(report)
    return 0


def _keep(args, started: float, **measured) -> None:
    """Every figure measured so far, pickled beside ``--out`` (``.pkl``): a report can be re-rendered from it."""
    import pickle
    path = Path(args.out).with_suffix('.pkl')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(dict(measured, argv=sys.argv[1:], rounds=args.rounds,
                                       train=(args.train_epochs, args.train_samples), load=os.getloadavg(),
                                       wall_s=time.perf_counter() - started)))


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
    parser.add_argument('--no-accuracy', action='store_true', help='skip the Fashion-MNIST accuracy section')
    parser.add_argument('--train-epochs', type=int, default=1)
    parser.add_argument('--train-samples', type=int, default=30000)
    parser.add_argument('--families', nargs='+', default=None, metavar='FAMILY',
                        help=f'accuracy section: only these of {", ".join(a[0] for a in ACCURACY_MODELS)}')
    parser.add_argument('--no-speed', action='store_true', help='skip the peak and models sections')
    parser.add_argument('--render', nargs='+', default=None, metavar='PKL',
                        help='measure nothing: write the report from the .pkl files earlier runs left beside their '
                             '--out (e.g. one run of the speed sections and one of the accuracy section)')
    parser.add_argument('--rules', action='store_true', help='also time every int8 rule against fp32')
    parser.add_argument('--rule-rounds', type=int, default=7, help='rounds of the int8 rules section')
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if args.render:
        return _render(args)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore')  # exporter and deprecation notices; nothing here depends on them
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's quantizer logs advice through the root logger
    import onnxruntime as ort
    ort.set_default_logger_severity(3)

    with tempfile.TemporaryDirectory(prefix='bench_deploy_') as tmp:
        workdir = Path(tmp)
        peak, rows, rule_rows = {}, [], []
        if not args.no_speed:
            peak = measure_peak(workdir, args.threads)
            for precision, kernels in peak.items():
                print(f'peak {precision}: ' + ', '.join(f'{k} {v:.0f}' for k, v in kernels.items()), flush=True)
            rows, rule_rows = bench_models(args, workdir, photo_folder(workdir))
            _keep(args, started, peak=peak, rows=rows, rule_rows=rule_rows)
        accuracy = [] if args.no_accuracy else bench_accuracy(args, workdir)
        _keep(args, started, peak=peak, rows=rows, rule_rows=rule_rows, accuracy=accuracy)
    report = write_report(args, peak, rows, rule_rows, accuracy, time.perf_counter() - started)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    if rows:
        write_chart(rows, out.with_suffix('.png'))
    print(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
