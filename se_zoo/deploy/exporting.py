"""Export a model to ONNX (dynamic batch), check it against PyTorch on real photos, add bf16 and int8, and choose
the default precision by measuring them on this machine.

``export(model, 'out/')`` writes a folder:

- ``model.onnx``: float32, input ``input`` (N x C x H x W, N dynamic), output ``logits`` (N x classes); ONNX
  Runtime runs it as fp32 and, where the CPU has bf16 instructions, OpenVINO runs it as bf16;
- ``model.int8.onnx``: with calibration images, ONNX Runtime's static QDQ quantization of it (see ``quantize.py``);
- ``deploy.json``: the preprocessing, label names, each precision's file and runtime, what the export was checked
  against and how the default precision was chosen (see ``config.py``).

The float graph must reproduce the PyTorch model on skimage.data's photos, run through the model's own eval
transform, at batch 1 and at batch 4: a maximum absolute logit difference above ``tolerance * max(1, max|logit|)``
refuses the export; bf16 is held to ``BF16_TOLERANCE`` likewise. ``precision='auto'`` then times every precision
that holds fp32's accuracy (``selection.py``) and makes the fastest the default. The folder is built beside its
target and swapped in whole, so a refused or failed export leaves nothing behind (and a previous export where it
was).
"""
import copy
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..errors import InvalidArgumentError, SEZooError, check_positive_int
from ..files import write_folder_atomically
from ._dependencies import require
from .config import CONFIG_NAME, ONNX_FILES, PRECISIONS, RUNTIMES, DeployConfig, Preprocessing, model_label_names
from .datasets import FASHION_MNIST, PHOTO_NAMES, calibration_dataset, check_dataset, evaluation_dataset, photo_batch
from .quantize import DEFAULT_INT8_RULE, INT8_RULES, quantize_onnx
from .runtime import bf16_unsupported_reason, check_bf16, open_runner
from .selection import (
    AUTO_ROUNDS, DEFAULT_CHECK_SAMPLES, Candidate, accuracy_on, agreement_on, choose, time_candidates)
from .timing import Timer, interleaved

__all__ = [
    'BF16_TOLERANCE', 'DEFAULT_CALIBRATION_SAMPLES', 'DEFAULT_TOLERANCE', 'PRECISION_CHOICES', 'ExportMismatchError',
    'ExportResult', 'export']

DEFAULT_TOLERANCE = 1e-4
# bf16 keeps 8 significant bits, so its logits are held to a looser bound than float32's rounding, relative to
# max(1, max|logit|) like ``tolerance``; measured on the photos: 2e-3 for se_resnet50, 6e-4 for se_efficientnet_b0.
BF16_TOLERANCE = 0.05
DEFAULT_CALIBRATION_SAMPLES = 256
PRECISION_CHOICES = ('auto',) + PRECISIONS
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
        files: model file per precision (bf16 runs ``model.onnx`` on OpenVINO).
        precision: the default precision ``load`` runs (auto's choice, or the one asked for).
        max_abs_logit_diff: float32 ONNX vs PyTorch on the photos (the figure held to the tolerance).
        bf16_max_abs_logit_diff: bf16 vs PyTorch on the same photos, when there is bf16.
        int8_max_abs_logit_diff: int8 vs PyTorch on the same photos, for information (int8 is judged on accuracy).
        int8_top1_agreement: the share of the photos whose int8 top-1 is PyTorch's.
        accuracy: top-1 percent per precision on the ``evaluate`` data, when given.
        config: the contents of ``deploy.json`` (``config.selection`` holds auto's timings and checks).
    """
    folder: Path
    files: Dict[str, Path]
    precision: str
    max_abs_logit_diff: float
    bf16_max_abs_logit_diff: Optional[float]
    int8_max_abs_logit_diff: Optional[float]
    int8_top1_agreement: Optional[float]
    accuracy: Optional[Dict[str, float]]
    config: DeployConfig


def export(
        model: Union[nn.Module, str],
        path: Union[str, Path],
        *,
        precision: str = 'auto',
        int8: bool = False,
        calibration: Union[str, Path, None] = None,
        calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
        int8_rule: str = DEFAULT_INT8_RULE,
        batch_sizes: Sequence[int] = (1,),
        evaluate: Union[str, Path, None] = None,
        eval_samples: Optional[int] = None,
        check_samples: int = DEFAULT_CHECK_SAMPLES,
        num_threads: Optional[int] = None,
        tolerance: float = DEFAULT_TOLERANCE,
        overwrite: bool = False,
        progress: bool = True,
        timer: Optional[Timer] = None,
        format: str = 'onnx',
) -> ExportResult:
    """Export ``model`` to the folder ``path``, checked against PyTorch on real photos, in the precision that runs
    fastest here without losing accuracy (or the one asked for).

    Args:
        model: an ``nn.Module`` (exported in eval mode; its mode is restored afterwards) or anything
            ``se_zoo.models.load_model`` takes (a model name, ``name.tag``, ``hf-hub:ORG/NAME``, a folder).
        path: the folder to write; it must not exist or be empty, or hold an earlier export and ``overwrite``.
        precision: ``'auto'`` (default): write fp32, bf16 where this CPU has bf16 instructions and OpenVINO is
            installed, int8 where ``calibration`` is given; time each at ``batch_sizes`` on this machine and make
            the fastest whose accuracy holds the default (never one slower than fp32). ``'fp32'``, ``'bf16'``
            or ``'int8'``: write that precision (and the fp32 file it derives from) and make it the default.
        int8: with ``'auto'``, insist that int8 is among the candidates (an error without ``calibration``).
        calibration: the images int8 ranges are measured on: ``'fashion-mnist'`` (its training split) or an
            ImageFolder directory (``<class>/<images>``); required for int8.
        calibration_samples: how many calibration images to use.
        int8_rule: which nodes stay in float (``se_zoo.deploy.quantize.INT8_RULES``); the default is the
            measured best (docs/deploy.md).
        batch_sizes: the batch sizes ``'auto'`` times the precisions at (the ones the model will be run at).
        evaluate: labelled images (``'fashion-mnist'`` or an ImageFolder directory named like the model's
            labels): every precision's top-1 is measured on them, and ``'auto'`` keeps only precisions within
            0.5 points of fp32. Without it, ``'auto'`` keeps precisions that keep fp32's top-1 and logits on
            99% of its check images (see ``se_zoo.deploy.selection``).
        eval_samples: evaluate on this many of the ``evaluate`` images (default: all).
        check_samples: unlabelled check images drawn from ``calibration`` (beside the calibrated ones), with the
            photos, when there are no labels.
        num_threads: the runtimes' threads while timing (default: theirs).
        tolerance: the largest accepted fp32 max-abs logit difference, relative to ``max(1, max|logit|)``.
        overwrite: replace an earlier export at ``path``.
        progress: show progress bars while calibrating and evaluating.
        timer: how ``'auto'`` times the precisions (default: ``se_zoo.deploy.timing.interleaved``, 7 rounds).
        format: ``'onnx'``, the one format supported.

    Raises:
        ExportMismatchError: the ONNX graph's logits (or bf16's) differ from PyTorch's beyond the tolerance.
        InvalidArgumentError: a bad argument or output folder, unusable calibration data, or bf16 asked for on
            a CPU without bf16 instructions.
        MissingDependencyError: onnx / onnxscript / onnxruntime / scikit-image missing (``se-zoo[deploy]``), or
            openvino for an explicit bf16 (``se-zoo[openvino]``).
    """
    if format not in FORMATS:
        raise InvalidArgumentError(f'format={format!r} is not supported; use one of {", ".join(FORMATS)}')
    if precision not in PRECISION_CHOICES:
        raise InvalidArgumentError(f'precision={precision!r} is unknown; use one of {", ".join(PRECISION_CHOICES)}')
    if not tolerance >= 0:
        raise InvalidArgumentError(f'tolerance={tolerance!r} must be >= 0')
    wants_int8 = precision == 'int8' or (precision == 'auto' and int8)
    if wants_int8 and calibration is None:
        raise InvalidArgumentError(
            f"int8 needs calibration images: give calibration='{FASHION_MNIST}' (for a model trained on it) or "
            f'an ImageFolder directory of the kind of images the model will see')
    if int8 and precision not in ('auto', 'int8'):
        raise InvalidArgumentError(f'int8=True asks for int8, but precision={precision!r}')
    if calibration is not None and precision in ('fp32', 'bf16'):
        raise InvalidArgumentError(f"calibration data is only used for int8, not precision={precision!r}")
    if int8_rule not in INT8_RULES:
        raise InvalidArgumentError(f'int8_rule={int8_rule!r} is unknown; use one of {", ".join(INT8_RULES)}')
    batch_sizes = tuple(batch_sizes)
    if not batch_sizes:
        raise InvalidArgumentError('batch_sizes=() must name at least one batch size')
    for batch_size in batch_sizes:
        check_positive_int('batch_sizes', batch_size)
    check_positive_int('check_samples', check_samples, zero=True)
    if precision == 'bf16':
        check_bf16()  # refused before any export work, with the reason
    folder = Path(path)
    _check_output(folder, overwrite)
    for name in ('onnx', 'onnxscript', 'onnxruntime', 'skimage'):
        require(name)
    # Checked before any export work: a missing or empty folder should not cost an export first.
    calibration_set = calibration_dataset(calibration, calibration_samples) if calibration is not None else None

    source = model if isinstance(model, str) else None
    if source is not None:
        from ..models._factory import load_model
        model = load_model(source)
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f'model must be an nn.Module or a model source string, not {type(model).__name__}')
    if any(t.device.type != 'cpu' for t in list(model.parameters()) + list(model.buffers())):
        model = copy.deepcopy(model).cpu()  # exported and checked on the CPU, where the runtimes will run it

    was_training = model.training
    model.eval()
    try:
        return _Exporter(
            model=model, folder=folder, source=source, precision=precision, calibration=calibration,
            calibration_set=calibration_set, calibration_samples=calibration_samples, int8_rule=int8_rule,
            batch_sizes=batch_sizes, evaluate=evaluate, eval_samples=eval_samples, check_samples=check_samples,
            num_threads=num_threads, tolerance=tolerance, progress=progress,
            timer=timer or _default_timer).run()
    finally:
        model.train(was_training)


def _default_timer(fns: Dict[str, Callable[[], object]]) -> Dict[str, list]:
    return interleaved(fns, AUTO_ROUNDS)


class _Exporter:
    """One export: the steps ``export`` takes once its arguments are checked, sharing what they measure."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)
        self.measured: Dict[str, Any] = {}
        self.accuracy: Optional[Dict[str, float]] = None

    def run(self) -> ExportResult:
        model = self.model
        preprocessing = Preprocessing.from_model(model)
        self.transform = preprocessing.transform()
        self.image_mode = preprocessing.image_mode
        self.photos = photo_batch(model)
        with torch.inference_mode():
            logits = model(self.photos).float().numpy()
        num_classes = logits.shape[1]
        self.reference = np.concatenate([logits, logits[:1]])  # as _run_twice returns them: the batch, then batch-of-one
        self.config = DeployConfig(
            architecture=getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__,
            source=str(self.source) if self.source is not None else type(model).__name__,
            preprocessing=preprocessing,
            label_names=model_label_names(model, num_classes),
            num_classes=num_classes,
        )
        try:
            write_folder_atomically(self.folder, self.write)
        except PermissionError as e:
            raise InvalidArgumentError(f'cannot write the export folder {self.folder}: {e}') from e
        config = self.config
        return ExportResult(
            folder=self.folder,
            files={p: self.folder / config.file(p) for p in config.files},
            precision=config.default_precision,
            max_abs_logit_diff=self.measured['fp32'],
            bf16_max_abs_logit_diff=self.measured.get('bf16'),
            int8_max_abs_logit_diff=self.measured.get('int8'),
            int8_top1_agreement=self.measured.get('int8_agreement'),
            accuracy=self.accuracy,
            config=config,
        )

    def write(self, tmp: Path) -> None:
        config = self.config
        fp32_path = tmp / ONNX_FILES['fp32']
        _export_onnx(self.model, self.photos[:_TRACE_BATCH], fp32_path, config.input_name, config.output_name)
        runners = {'fp32': self._runner(tmp, 'fp32')}
        diff = self._photo_diff('fp32', runners['fp32'])
        allowed = self.tolerance * max(1.0, float(np.abs(self.reference).max()))
        if not diff <= allowed:
            raise ExportMismatchError(
                f'the ONNX export of {config.architecture} does not match PyTorch: its logits on '
                f'{len(PHOTO_NAMES)} photos differ by up to {diff:.3g} (allowed {allowed:.3g} = {self.tolerance:g} x '
                f'max(1, max|logit|)); nothing was written')
        config.files = {'fp32': _file_entry('fp32')}
        config.checks = dict(
            photos=[f'skimage.data.{n}' for n in PHOTO_NAMES], batch_sizes=[1, len(PHOTO_NAMES)],
            max_abs_logit_diff=diff, tolerance=self.tolerance, allowed_abs_diff=allowed)
        skipped: Dict[str, str] = {}

        if self.precision in ('auto', 'bf16'):
            reason = bf16_unsupported_reason() if self.precision == 'auto' else None
            if reason is None and self.precision == 'auto' and not _installed('openvino'):
                reason = "OpenVINO, which runs bf16, is not installed (pip install 'se-zoo[openvino]')"
            if reason is None:
                runners['bf16'] = self._runner(tmp, 'bf16')
                bf16_diff = self._photo_diff('bf16', runners['bf16'])
                bf16_allowed = BF16_TOLERANCE * max(1.0, float(np.abs(self.reference).max()))
                config.checks.update(bf16_max_abs_logit_diff=bf16_diff, bf16_tolerance=BF16_TOLERANCE,
                                     bf16_allowed_abs_diff=bf16_allowed)
                if bf16_diff <= bf16_allowed:
                    config.files['bf16'] = _file_entry('bf16')
                elif self.precision == 'bf16':
                    raise ExportMismatchError(
                        f'bf16 on OpenVINO does not match PyTorch on the photos: logits differ by up to '
                        f'{bf16_diff:.3g} (allowed {bf16_allowed:.3g} = {BF16_TOLERANCE:g} x max(1, max|logit|)); '
                        f'nothing was written')
                else:
                    del runners['bf16']
                    skipped['bf16'] = f'its logits on the photos differ from PyTorch by {bf16_diff:.3g} > {bf16_allowed:.3g}'
            else:
                skipped['bf16'] = reason

        if self.calibration_set is not None:
            int8_path = tmp / ONNX_FILES['int8']
            batches = _calibration_batches(self.calibration_set, self.transform, self.image_mode, self.progress)
            kept_float = quantize_onnx(fp32_path, int8_path, batches, input_name=config.input_name,
                                       rule=self.int8_rule)
            runners['int8'] = self._runner(tmp, 'int8')
            self._photo_diff('int8', runners['int8'])
            config.files['int8'] = _file_entry('int8')
            config.int8 = dict(
                calibration=str(self.calibration), calibration_images=len(self.calibration_set), rule=self.int8_rule,
                nodes_in_float=len(kept_float), photo_max_abs_logit_diff=self.measured['int8'],
                photo_top1_agreement=self.measured['int8_agreement'])
        elif self.precision == 'auto':
            skipped['int8'] = 'no calibration images were given'

        candidates = {p: Candidate(p, runners[p]) for p in PRECISIONS if p in runners}
        if self.evaluate is not None:
            dataset = evaluation_dataset(self.evaluate, config.label_names, self.eval_samples)
            self.accuracy = accuracy_on(candidates, dataset, self.transform, self.image_mode, self.progress)
        if self.precision == 'auto':
            if self.evaluate is None:
                check_images = self._check_images()
                agreement_on(candidates, check_images)
            time_candidates(candidates, self.batch_sizes, self.photos.numpy(), self.timer)
            chosen, rule = choose(candidates, labelled=self.evaluate is not None)
            config.default_precision = chosen
            config.selection = dict(
                mode='auto', chosen=chosen, rule=rule, batch_sizes=list(self.batch_sizes),
                candidates={p: c.record() for p, c in candidates.items()}, skipped=skipped)
            if self.evaluate is None:
                config.selection['check_images'] = int(len(check_images))
        else:
            config.default_precision = self.precision
            config.selection = dict(mode='asked', chosen=self.precision)
            if self.accuracy is not None:
                config.selection['candidates'] = {p: c.record() for p, c in candidates.items()}
        if self.accuracy is not None:
            config.selection['evaluated_on'] = dict(data=str(self.evaluate), accuracy=self.accuracy)
        (tmp / CONFIG_NAME).write_text(config.to_json())

    def _runner(self, tmp: Path, precision: str):
        return open_runner(tmp / ONNX_FILES[precision], RUNTIMES[precision], precision,
                           input_name=self.config.input_name, num_threads=self.num_threads)

    def _photo_diff(self, precision: str, runner) -> float:
        logits = _run_twice(runner, self.photos.numpy())
        diff = float(np.abs(logits - self.reference).max())
        self.measured[precision] = diff
        if precision == 'int8':
            self.measured['int8_agreement'] = float((logits.argmax(1) == self.reference.argmax(1)).mean())
        return diff

    def _check_images(self) -> np.ndarray:
        """The photos, and with calibration data, up to ``check_samples`` of its images beside the calibrated ones."""
        batches = [self.photos.numpy()]
        if self.calibration is not None and self.check_samples:
            dataset = check_dataset(self.calibration, self.calibration_samples, self.check_samples)
            batches += list(_calibration_batches(dataset, self.transform, self.image_mode, False))
        return np.concatenate(batches)


def _file_entry(precision: str) -> Dict[str, str]:
    entry = dict(file=ONNX_FILES[precision], runtime=RUNTIMES[precision])
    if RUNTIMES[precision] == 'openvino':
        entry['inference_precision'] = {'bf16': 'bf16'}.get(precision, 'f32')
    return entry


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    """torch's dynamo exporter with a symbolic batch dimension.

    The dynamo exporter is torch's supported path (the TorchScript one is deprecated); it traces timm's models
    without graph breaks, folds BatchNorm into the convolutions, and its ONNX runs as fast in ONNX Runtime.
    """
    program = torch.onnx.export(
        model, (example,), dynamo=True, input_names=[input_name], output_names=[output_name],
        dynamic_shapes=({0: torch.export.Dim('batch')},), verbose=False)
    program.save(str(path))


def _run_twice(runner, images: np.ndarray) -> np.ndarray:
    """The logits for ``images`` run as one batch and, for the first image, as a batch of one: a batch dimension
    that was not kept symbolic fails one of the two."""
    try:
        batch = runner(np.ascontiguousarray(images))
        single = runner(np.ascontiguousarray(images[:1]))
    except Exception as e:  # the runtimes raise their own untyped errors for a shape the graph cannot take
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
