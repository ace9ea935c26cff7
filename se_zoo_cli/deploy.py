"""``se-zoo export`` and ``se-zoo predict``: the command line of ``se_zoo.deploy``."""
import argparse
from typing import Callable, Dict

import numpy as np

from se_zoo.deploy import DEFAULT_CALIBRATION_SAMPLES, DEFAULT_TOLERANCE, evaluate, export, load
from se_zoo.deploy.config import PRECISIONS
from se_zoo.deploy.datasets import FASHION_MNIST
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
        args.source, args.out, int8=args.int8, calibration=args.calibration,
        calibration_samples=args.calibration_samples, tolerance=args.tolerance, overwrite=args.overwrite,
        progress=not args.no_progress)
    c, h, w = result.config.preprocessing.input_size
    print(f'{args.source} -> {result.folder}  (input Nx{c}x{h}x{w}, {result.config.num_classes} classes)')
    for precision, path in result.files.items():
        print(f'  {precision:5s} {path}')
    print(f'  fp32 vs PyTorch on {len(result.config.checks["photos"])} photos: max abs logit diff '
          f'{result.max_abs_logit_diff:.2g} (allowed {result.config.checks["allowed_abs_diff"]:.2g})')
    if result.int8_max_abs_logit_diff is not None:
        print(f'  int8 vs PyTorch on the photos: max abs logit diff {result.int8_max_abs_logit_diff:.2g}, '
              f'top-1 agreement {100 * result.int8_top1_agreement:.0f}%')
    if eval_data is not None:
        accuracy = evaluate(result.folder, eval_data, num_samples=args.eval_samples, progress=not args.no_progress)
        for precision, value in accuracy.items():
            print(f'  {precision} test accuracy: {value:.2f}%')
        if 'int8' in accuracy:
            print(f'  int8 - fp32: {accuracy["int8"] - accuracy["fp32"]:+.2f} points')
    return 0


def _predict(args: argparse.Namespace) -> int:
    model = load(args.export, precision=args.precision)
    for item in args.images:
        # An .npy file is a batch already preprocessed (N x C x H x W, or one C x H x W); anything else an image.
        predictions = model.predict(_read_array(item) if item.endswith('.npy') else [item], top_k=args.top_k)
        for index, prediction in enumerate(predictions):
            name = f'{item}[{index}]' if item.endswith('.npy') else item
            print(f'{name}  ({model.precision})')
            for rank, score in enumerate(prediction.top, 1):
                print(f'  {rank}. {score.probability:6.2%}  {score.label}  [{score.index}]')
    return 0


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
    p.description = ('Export SOURCE to the folder OUT: model.onnx (float32, dynamic batch), model.int8.onnx with '
                     '--int8, and deploy.json (preprocessing and label names). The export must match PyTorch on '
                     "skimage.data's photos within the tolerance, or nothing is written.")
    p.add_argument('source', help='model name (se_resnet50), name.tag, hf-hub:ORG/NAME, local-dir:PATH or a '
                                  'folder written by se-zoo finetune (runs/x/best)')
    p.add_argument('out', help='folder to write; must not exist or be empty (or hold an earlier export, with '
                               '--overwrite)')
    p.add_argument('--int8', action='store_true', help="also write int8 by ONNX Runtime's static quantization")
    p.add_argument('--calibration', default=None, metavar='DATA',
                   help="int8 calibration images: 'fashion-mnist' (its train split) or an ImageFolder directory")
    p.add_argument('--calibration-samples', type=int, default=DEFAULT_CALIBRATION_SAMPLES, metavar='N', help='calibration images to use')
    p.add_argument('--evaluate', nargs='?', const=_FROM_CALIBRATION, default=None, metavar='DATA',
                   help="print top-1 accuracy of each precision on 'fashion-mnist' (its 10k test images) or an "
                        "ImageFolder directory; without DATA, the calibration set's test split (fashion-mnist only)")
    p.add_argument('--eval-samples', type=int, default=None, metavar='N',
                   help='evaluate on N images (default: all of them)')
    p.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                   help='largest accepted max-abs logit difference vs PyTorch, relative to max(1, max|logit|)')
    p.add_argument('--overwrite', action='store_true', help='replace an earlier export in OUT')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.set_defaults(run=_export)


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.description = ('Run an export folder written by se-zoo export on image files (resized and normalised as '
                     'deploy.json says) or preprocessed .npy arrays, and print the top classes of each image.')
    p.add_argument('export', help='export folder (holds deploy.json)')
    p.add_argument('images', nargs='+',
                   help='image files, or .npy arrays already preprocessed to the input size (N x C x H x W)')
    p.add_argument('--top-k', type=int, default=5, help='classes to print per image')
    p.add_argument('--precision', choices=PRECISIONS, default=None,
                   help="which file to run (default: the export's own, int8 where written)")
    p.set_defaults(run=_predict)


ARGUMENTS: Dict[str, Callable[[argparse.ArgumentParser], None]] = {'export': _add_export, 'predict': _add_predict}
