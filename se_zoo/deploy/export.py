"""Export a model to ONNX (dynamic batch), check it against PyTorch on real photos, optionally quantize to int8.

``export(model, 'out/')`` writes a folder:

- ``model.onnx``: float32, input ``input`` (N x C x H x W, N dynamic), output ``logits`` (N x classes);
- ``model.int8.onnx``: with ``int8=True``, ONNX Runtime's static QDQ quantization of it (see ``quantize.py``);
- ``deploy.json``: the preprocessing, label names and what the export was checked against (see ``config.py``).

The float graph must reproduce the PyTorch model on skimage.data's photos, run through the model's own eval
transform, at batch 1 and at batch 4: a maximum absolute logit difference above ``tolerance * max(1, max|logit|)``
refuses the export. The folder is built beside its target and swapped in whole, so a refused or failed export
leaves nothing behind (and a previous export where it was).
"""
import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn as nn

from ..errors import InvalidArgumentError, SEZooError
from ..files import write_folder_atomically
from ._dependencies import require
from .config import CONFIG_NAME, ONNX_FILES, DeployConfig, Preprocessing, model_label_names
from .datasets import FASHION_MNIST, PHOTO_NAMES, calibration_dataset, photos
from .quantize import DEFAULT_INT8_RULE, INT8_RULES, quantize_onnx

__all__ = ['ExportMismatchError', 'ExportResult', 'export', 'DEFAULT_TOLERANCE', 'DEFAULT_CALIBRATION_SAMPLES']

DEFAULT_TOLERANCE = 1e-4
DEFAULT_CALIBRATION_SAMPLES = 256
FORMATS = ('onnx',)
# The exporter traces at this batch size; any other size, 1 included, then stays symbolic in the graph.
_TRACE_BATCH = 2
_CALIBRATION_BATCH = 16


class ExportMismatchError(SEZooError, RuntimeError):
    """The exported graph does not compute what the PyTorch model computes; nothing was written."""


@dataclass
class ExportResult:
    """What ``export`` wrote and measured.

    Attributes:
        folder: the export folder (``deploy.json`` + ONNX files).
        files: ONNX path per precision.
        max_abs_logit_diff: float32 ONNX vs PyTorch on the photos (the figure held to the tolerance).
        int8_max_abs_logit_diff: int8 vs PyTorch on the same photos, for information (int8 is judged on accuracy).
        int8_top1_agreement: the share of the photos whose int8 top-1 is PyTorch's.
        config: the contents of ``deploy.json``.
    """
    folder: Path
    files: Dict[str, Path]
    max_abs_logit_diff: float
    int8_max_abs_logit_diff: Optional[float]
    int8_top1_agreement: Optional[float]
    config: DeployConfig


def export(
        model: Union[nn.Module, str],
        path: Union[str, Path],
        *,
        format: str = 'onnx',
        int8: bool = False,
        calibration: Union[str, Path, None] = None,
        calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
        int8_rule: str = DEFAULT_INT8_RULE,
        tolerance: float = DEFAULT_TOLERANCE,
        overwrite: bool = False,
        progress: bool = True,
) -> ExportResult:
    """Export ``model`` to the folder ``path`` for ONNX Runtime, checked against PyTorch on real photos.

    Args:
        model: an ``nn.Module`` (exported in eval mode; its mode is restored afterwards) or anything
            ``se_zoo.models.load_model`` takes (a model name, ``name.tag``, ``hf-hub:ORG/NAME``, a folder).
        path: the folder to write; it must not exist or be empty, or hold an earlier export and ``overwrite``.
        format: ``'onnx'``, the one format supported.
        int8: also write ``model.int8.onnx`` by ONNX Runtime's static quantization; ``se_zoo.deploy.load``
            then runs it by default.
        calibration: the images int8 ranges are measured on: ``'fashion-mnist'`` (its training split) or an
            ImageFolder directory (``<class>/<images>``); required with ``int8``.
        calibration_samples: how many calibration images to use.
        int8_rule: which nodes stay in float (``se_zoo.deploy.quantize.INT8_RULES``); the default is the
            measured best (docs/deploy.md).
        tolerance: the largest accepted max-abs logit difference, relative to ``max(1, max|logit|)``.
        overwrite: replace an earlier export at ``path``.
        progress: show a progress bar while calibrating.

    Raises:
        ExportMismatchError: the ONNX graph's logits differ from PyTorch's beyond ``tolerance``.
        InvalidArgumentError: a bad argument or output folder, or unusable calibration data.
        MissingDependencyError: onnx / onnxscript / onnxruntime / scikit-image missing (``se-zoo[deploy]``).
    """
    if format not in FORMATS:
        raise InvalidArgumentError(f'format={format!r} is not supported; use one of {", ".join(FORMATS)}')
    if not tolerance >= 0:
        raise InvalidArgumentError(f'tolerance={tolerance!r} must be >= 0')
    if int8 and calibration is None:
        raise InvalidArgumentError(
            f"int8 needs calibration images: give calibration='{FASHION_MNIST}' (for a model trained on it) or "
            f'an ImageFolder directory of the kind of images the model will see')
    if calibration is not None and not int8:
        raise InvalidArgumentError('calibration data is only used with int8=True')
    if int8_rule not in INT8_RULES:
        raise InvalidArgumentError(f'int8_rule={int8_rule!r} is unknown; use one of {", ".join(INT8_RULES)}')
    folder = Path(path)
    _check_output(folder, overwrite)
    for name in ('onnx', 'onnxscript', 'onnxruntime', 'skimage'):
        require(name)
    # Checked before any export work: a missing or empty folder should not cost an export first.
    calibration_set = calibration_dataset(calibration, calibration_samples) if int8 else None

    source = model if isinstance(model, str) else None
    if source is not None:
        from ..models._factory import load_model
        model = load_model(source)
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f'model must be an nn.Module or a model source string, not {type(model).__name__}')
    if any(t.device.type != 'cpu' for t in list(model.parameters()) + list(model.buffers())):
        model = copy.deepcopy(model).cpu()  # exported and checked on the CPU, where ONNX Runtime will run it

    was_training = model.training
    model.eval()
    try:
        return _export(model, folder, source, int8, calibration, calibration_set, int8_rule, tolerance, progress)
    finally:
        model.train(was_training)


def _export(model, folder, source, int8, calibration, calibration_set, int8_rule, tolerance, progress):
    preprocessing = Preprocessing.from_model(model)
    transform = preprocessing.transform()
    photo_batch = torch.stack([transform(p.convert(preprocessing.image_mode)) for p in photos()])
    with torch.inference_mode():
        logits = model(photo_batch).float().numpy()
    num_classes = logits.shape[1]
    reference = np.concatenate([logits, logits[:1]])  # as _run_onnx returns them: the batch, then batch-of-one
    config = DeployConfig(
        architecture=getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__,
        source=str(source) if source is not None else type(model).__name__,
        preprocessing=preprocessing,
        label_names=model_label_names(model, num_classes),
        num_classes=num_classes,
    )
    measured: Dict[str, Any] = {}

    def write(tmp: Path) -> None:
        fp32_path = tmp / ONNX_FILES['fp32']
        _export_onnx(model, photo_batch[:_TRACE_BATCH], fp32_path, config.input_name, config.output_name)
        fp32 = _run_onnx(fp32_path, config.input_name, photo_batch.numpy())
        diff = float(np.abs(fp32 - reference).max())
        allowed = tolerance * max(1.0, float(np.abs(reference).max()))
        if not diff <= allowed:
            raise ExportMismatchError(
                f'the ONNX export of {config.architecture} does not match PyTorch: its logits on '
                f'{len(PHOTO_NAMES)} photos differ by up to {diff:.3g} (allowed {allowed:.3g} = {tolerance:g} x '
                f'max(1, max|logit|)); nothing was written')
        config.files = {'fp32': fp32_path.name}
        config.checks = dict(
            photos=[f'skimage.data.{n}' for n in PHOTO_NAMES], batch_sizes=[1, len(PHOTO_NAMES)],
            max_abs_logit_diff=diff, tolerance=tolerance, allowed_abs_diff=allowed)
        measured['fp32'] = diff
        if int8:
            int8_path = tmp / ONNX_FILES['int8']
            batches = _calibration_batches(calibration_set, transform, preprocessing.image_mode, progress)
            kept_float = quantize_onnx(fp32_path, int8_path, batches, input_name=config.input_name, rule=int8_rule)
            int8_logits = _run_onnx(int8_path, config.input_name, photo_batch.numpy())
            measured['int8'] = float(np.abs(int8_logits - reference).max())
            measured['int8_agreement'] = float((int8_logits.argmax(1) == reference.argmax(1)).mean())
            config.files['int8'] = int8_path.name
            config.default_precision = 'int8'
            config.int8 = dict(
                calibration=str(calibration), calibration_images=len(calibration_set), rule=int8_rule,
                nodes_in_float=len(kept_float), photo_max_abs_logit_diff=measured['int8'],
                photo_top1_agreement=measured['int8_agreement'])
        (tmp / CONFIG_NAME).write_text(config.to_json())

    try:
        write_folder_atomically(folder, write)
    except PermissionError as e:
        raise InvalidArgumentError(f'cannot write the export folder {folder}: {e}') from e
    return ExportResult(
        folder=folder,
        files={p: folder / name for p, name in config.files.items()},
        max_abs_logit_diff=measured['fp32'],
        int8_max_abs_logit_diff=measured.get('int8'),
        int8_top1_agreement=measured.get('int8_agreement'),
        config=config,
    )


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    """torch's dynamo exporter with a symbolic batch dimension.

    The dynamo exporter is torch's supported path (the TorchScript one is deprecated); it traces timm's models
    without graph breaks, folds BatchNorm into the convolutions, and its ONNX runs as fast in ONNX Runtime.
    """
    program = torch.onnx.export(
        model, (example,), dynamo=True, input_names=[input_name], output_names=[output_name],
        dynamic_shapes=({0: torch.export.Dim('batch')},), verbose=False)
    program.save(str(path))


def _run_onnx(path: Path, input_name: str, images: np.ndarray) -> np.ndarray:
    """The graph's logits for ``images`` run as one batch and, for the first image, as a batch of one: a batch
    dimension that was not kept symbolic fails one of the two."""
    ort = require('onnxruntime')
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    try:
        batch, = session.run(None, {input_name: images})
        single, = session.run(None, {input_name: images[:1]})
    except Exception as e:  # onnxruntime raises its own untyped errors for a shape the graph cannot take
        raise ExportMismatchError(f'the exported graph cannot run a batch of {len(images)} and of 1: {e}') from e
    # The batch-of-one logits join the comparison: a graph that only runs right at the traced size is refused.
    return np.concatenate([batch, single])


def _calibration_batches(dataset, transform: Callable, image_mode: str, progress: bool) -> Iterator[np.ndarray]:
    from tqdm import tqdm
    bar = tqdm(total=len(dataset), desc='calibrating int8', unit='img', disable=not progress)
    try:
        for start in range(0, len(dataset), _CALIBRATION_BATCH):
            images = [dataset[i][0] for i in range(start, min(start + _CALIBRATION_BATCH, len(dataset)))]
            yield torch.stack([transform(img.convert(image_mode)) for img in images]).numpy()
            bar.update(len(images))
    finally:
        bar.close()


def _check_output(folder: Path, overwrite: bool) -> None:
    """Refuse an output that cannot or should not be replaced, before anything is exported."""
    if folder.exists():
        if not folder.is_dir():
            raise InvalidArgumentError(f'output {folder} is a file; give a folder to write the export into')
        earlier_export = (folder / CONFIG_NAME).is_file()
        if any(folder.iterdir()) and not (overwrite and earlier_export):
            hint = ('; pass overwrite=True (--overwrite) to replace the earlier export' if earlier_export
                    else '; give a new or empty folder (only an earlier export is ever replaced)')
            raise InvalidArgumentError(f'output folder {folder} is not empty{hint}')
    ancestor = folder.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidArgumentError(f'cannot create {folder}: {ancestor} is a file, not a folder')
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f'cannot create {folder}: {ancestor} is not writable')
