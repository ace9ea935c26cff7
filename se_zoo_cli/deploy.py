"""``se-zoo export`` and ``se-zoo predict``: the command line of ``se_zoo.deploy``."""
import argparse
from typing import Callable, Dict

import numpy as np

from se_zoo.deploy import DEFAULT_CALIBRATION_SAMPLES, DEFAULT_TOLERANCE, PRECISION_CHOICES, PRECISIONS, export, load
from se_zoo.deploy.datasets import FASHION_MNIST
from se_zoo.deploy.selection import DEFAULT_CHECK_SAMPLES
from se_zoo.errors import InvalidArgumentError, MissingFileError

__all__ = ['ARGUMENTS']


def _export(args: argparse.Namespace) -> int:
    eval_data = args.evaluate
    if eval_data == _FROM_CALIBRATION:
        if args.calibration != FASHION_MNIST:
            raise InvalidArgumentError(
                f'--evaluate needs labelled data: give --evaluate {FASHION_MNIST} or --evaluate DIR (an ImageFolder '
                f"directory whose class folders are named like the model's labels)")
        eval_data = FASHION_MNIST
    result = export(
        args.source, args.out, precision=args.precision, int8=args.int8, calibration=args.calibration,
        calibration_samples=args.calibration_samples, batch_sizes=tuple(args.batch_size), evaluate=eval_data,
        eval_samples=args.eval_samples, check_samples=args.check_samples, num_threads=args.threads,
        tolerance=args.tolerance, overwrite=args.overwrite, progress=not args.no_progress)
    config = result.config
    c, h, w = config.preprocessing.input_size
    print(f'{args.source} -> {result.folder}  (input Nx{c}x{h}x{w}, {config.num_classes} classes)')
    for precision, path in result.files.items():
        print(f'  {precision:5s} {path}  ({config.runtime(precision)})')
    print(f'  fp32 vs PyTorch on {len(config.checks["photos"])} photos: max abs logit diff '
          f'{result.max_abs_logit_diff:.2g} (allowed {config.checks["allowed_abs_diff"]:.2g})')
    if result.bf16_max_abs_logit_diff is not None:
        print(f'  bf16 vs PyTorch on the photos: max abs logit diff {result.bf16_max_abs_logit_diff:.2g} '
              f'(allowed {config.checks["bf16_allowed_abs_diff"]:.2g})')
    if result.int8_max_abs_logit_diff is not None:
        print(f'  int8 vs PyTorch on the photos: max abs logit diff {result.int8_max_abs_logit_diff:.2g}, '
              f'top-1 agreement {100 * result.int8_top1_agreement:.0f}%')
    if result.accuracy is not None:
        for precision, value in result.accuracy.items():
            print(f'  {precision} test accuracy: {value:.2f}%')
        for precision in ('bf16', 'int8'):
            if precision in result.accuracy:
                print(f'  {precision} - fp32: {result.accuracy[precision] - result.accuracy["fp32"]:+.2f} points')
    selection = config.selection
    if selection.get('mode') == 'auto':
        for precision, record in selection['candidates'].items():
            timings = ', '.join(f'batch {b}: {ms:.2f} ms ({record["speedup_over_fp32"][b]:.2f}x fp32)'
                                for b, ms in record['ms_per_batch'].items())
            note = f'; {record["reason"]}' if record.get('reason') else ''
            print(f'  auto: {precision:5s} {timings}{note}')
        for precision, reason in selection['skipped'].items():
            print(f'  auto: {precision:5s} not exported: {reason}')
    print(f'  default precision: {result.precision} ({"measured fastest" if selection.get("mode") == "auto" else "asked for"})')
    return 0


def _predict(args: argparse.Namespace) -> int:
    model = load(args.export, precision=args.precision)
    # Image files are preprocessed and run together, in batches; an .npy file is a batch already preprocessed
    # (N x C x H x W, or one C x H x W).
    images = [item for item in args.images if not item.endswith('.npy')]
    image_predictions = iter(model.predict(images, top_k=args.top_k) if images else [])
    for item in args.images:
        if item.endswith('.npy'):
            for index, prediction in enumerate(model.predict(_read_array(item), top_k=args.top_k)):
                _print_prediction(f'{item}[{index}]', model.precision, prediction)
        else:
            _print_prediction(item, model.precision, next(image_predictions))
    return 0


def _print_prediction(name: str, precision: str, prediction) -> None:
    print(f'{name}  ({precision})')
    for rank, score in enumerate(prediction.top, 1):
        print(f'  {rank}. {score.probability:6.2%}  {score.label}  [{score.index}]')


def _read_array(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError as e:
        raise MissingFileError(f'array file {path} does not exist') from e
    except ValueError as e:
        raise InvalidArgumentError(f'cannot read {path} as a numpy array: {e}') from e


# --evaluate given without a value: evaluate on the test split of the calibration data.
_FROM_CALIBRATION = '<calibration>'


def _add_export(p: argparse.ArgumentParser) -> None:
    p.description = ('Export SOURCE to the folder OUT: model.onnx (float32, dynamic batch; ONNX Runtime runs it as '
                     'fp32, OpenVINO as bf16 on CPUs with bf16 instructions), model.int8.onnx with calibration '
                     'images, and deploy.json (preprocessing, label names, each precision\'s file and runtime). The '
                     "export must match PyTorch on skimage.data's photos within the tolerance, or nothing is written. "
                     '--precision auto (the default) times every precision here and makes the fastest one whose '
                     'accuracy holds the default, never one slower than fp32.')
    p.add_argument('source', help='model name (se_resnet50), name.tag, hf-hub:ORG/NAME, local-dir:PATH or a '
                                  'folder written by se-zoo finetune (runs/x/best)')
    p.add_argument('out', help='folder to write; must not exist or be empty (or hold an earlier export, with '
                               '--overwrite)')
    p.add_argument('--precision', choices=PRECISION_CHOICES, default='auto',
                   help='auto: measure fp32, bf16 (where supported) and int8 (with --calibration) and keep the '
                        'fastest whose accuracy holds; or export this precision as the default')
    p.add_argument('--int8', action='store_true',
                   help='with --precision auto: int8 must be among the candidates (needs --calibration)')
    p.add_argument('--calibration', default=None, metavar='DATA',
                   help="int8 calibration images: 'fashion-mnist' (its train split) or an ImageFolder directory")
    p.add_argument('--calibration-samples', type=int, default=DEFAULT_CALIBRATION_SAMPLES, metavar='N',
                   help='calibration images to use')
    p.add_argument('--batch-size', type=int, nargs='+', default=[1], metavar='N',
                   help='batch size(s) auto times the precisions at: the ones the model will run at')
    p.add_argument('--evaluate', nargs='?', const=_FROM_CALIBRATION, default=None, metavar='DATA',
                   help="top-1 accuracy of each precision on 'fashion-mnist' (its 10k test images) or an ImageFolder "
                        "directory, which auto then judges accuracy by; without DATA, the calibration set's test "
                        'split (fashion-mnist only)')
    p.add_argument('--eval-samples', type=int, default=None, metavar='N',
                   help='evaluate on N images (default: all of them)')
    p.add_argument('--check-samples', type=int, default=DEFAULT_CHECK_SAMPLES, metavar='N',
                   help='without --evaluate: unlabelled calibration-source images auto compares each precision '
                        'with fp32 on, besides the photos')
    p.add_argument('--threads', type=int, default=None, metavar='N', help="the runtimes' threads while timing")
    p.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                   help='largest accepted max-abs logit difference vs PyTorch, relative to max(1, max|logit|)')
    p.add_argument('--overwrite', action='store_true', help='replace an earlier export in OUT')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.set_defaults(run=_export)


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.description = ('Run an export folder written by se-zoo export on image files (resized and normalised as '
                     'deploy.json says, and run together in batches) or preprocessed .npy arrays, and print the top '
                     'classes of each image.')
    p.add_argument('export', help='export folder (holds deploy.json)')
    p.add_argument('images', nargs='+',
                   help='image files, or .npy arrays already preprocessed to the input size (N x C x H x W)')
    p.add_argument('--top-k', type=int, default=5, help='classes to print per image')
    p.add_argument('--precision', choices=PRECISIONS, default=None,
                   help="which precision to run (default: the export's own, as deploy.json names it)")
    p.set_defaults(run=_predict)


ARGUMENTS: Dict[str, Callable[[argparse.ArgumentParser], None]] = {'export': _add_export, 'predict': _add_predict}
