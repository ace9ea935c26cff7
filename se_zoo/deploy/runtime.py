"""Run an export: ``load('out/')`` opens the precision ``deploy.json`` names as its default, on its runtime.

``model = load('out/')`` reads ``deploy.json`` and opens the default precision's file on the runtime that runs it
(ONNX Runtime for fp32 and int8, OpenVINO for bf16); ``model.run(batch)`` is the runtime alone on a preprocessed
NCHW float32 array (what a server calls in its loop); ``model.predict(images)`` takes PIL images or image files,
preprocesses them per the sidecar, runs them as batches and returns each image's class probabilities and top-k
labels.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, FrozenSet, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InvalidArgumentError, MissingFileError, check_positive_int
from ._dependencies import require
from .config import CONFIG_NAME, PRECISIONS, DeployConfig

__all__ = ['ClassScore', 'DeployedModel', 'Prediction', 'bf16_unsupported_reason', 'check_bf16', 'load', 'open_runner']

ImageInput = Union[Image.Image, str, Path]
# Batches run through the runtime in chunks of this many images, which bounds memory for long lists.
_CHUNK = 64
# The CPU flags (Linux /proc/cpuinfo names) of native bf16 arithmetic: AVX512-BF16 (Zen 4/5, Cooper Lake and
# later Xeons) or AMX-BF16 (Sapphire Rapids and later).
_BF16_FLAGS = frozenset({'avx512_bf16', 'amx_bf16'})
Runner = Callable[[np.ndarray], np.ndarray]


def _cpu_flags() -> Optional[FrozenSet[str]]:
    """The CPU's feature flags from /proc/cpuinfo, or None where there is no such file (not Linux)."""
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith('flags'):
            return frozenset(line.split(':', 1)[1].split())
    return frozenset()


def bf16_unsupported_reason() -> Optional[str]:
    """None where this CPU computes bf16 natively, else why bf16 is refused (one line).

    bf16 is only worth running where the CPU has bf16 instructions; elsewhere OpenVINO would emulate it, slower
    than fp32. Linux's CPU flags decide; without them (other systems), OpenVINO's own view of the CPU does.
    """
    flags = _cpu_flags()
    if flags is not None:
        if flags & _BF16_FLAGS:
            return None
    else:
        ov = require('openvino')
        if 'BF16' in ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'):
            return None
    return ('bf16 needs a CPU with bf16 instructions (avx512_bf16 or amx_bf16) and this one has neither; '
            "emulated bf16 is slower than fp32, so use precision 'fp32' or 'int8' (or 'auto')")


def check_bf16() -> None:
    """Raise ``InvalidArgumentError`` where this CPU has no bf16 instructions, ``MissingDependencyError`` where
    OpenVINO (which runs bf16) is not installed."""
    reason = bf16_unsupported_reason()
    if reason is not None:
        raise InvalidArgumentError(reason)
    require('openvino')


def open_runner(
        path: Union[str, Path],
        runtime: str,
        precision: str,
        *,
        input_name: str = 'input',
        num_threads: Optional[int] = None,
        providers: Optional[Sequence[str]] = None,
        session_options=None,
        openvino_config: Optional[Mapping[str, Any]] = None,
) -> Runner:
    """A function that runs the model file ``path`` on ``runtime`` at ``precision``: NCHW float32 in, logits out.

    OpenVINO always gets its inference precision named (``f32`` for fp32): on a CPU with bf16 instructions it
    would otherwise pick bf16 by itself.
    """
    if runtime == 'onnxruntime':
        ort = require('onnxruntime')
        options = session_options if session_options is not None else ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        session = ort.InferenceSession(str(path), options, providers=list(providers or ['CPUExecutionProvider']))

        def run_onnxruntime(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: batch})[0]
        run_onnxruntime.session = session
        return run_onnxruntime
    if runtime == 'openvino':
        if precision == 'bf16':
            check_bf16()
        ov = require('openvino')
        core = ov.Core()
        # One request runs at a time (a server loop, a benchmark): LATENCY gives it every thread.
        config = {'INFERENCE_PRECISION_HINT': {'bf16': 'bf16'}.get(precision, 'f32'), 'PERFORMANCE_HINT': 'LATENCY'}
        if num_threads is not None:
            config['INFERENCE_NUM_THREADS'] = int(num_threads)
        config.update(openvino_config or {})
        request = core.compile_model(core.read_model(str(path)), 'CPU', config).create_infer_request()

        def run_openvino(batch: np.ndarray) -> np.ndarray:
            # The output tensor is reused by the next call: the caller gets its own copy.
            return np.array(request.infer({0: batch})[0], copy=True)
        run_openvino.request = request
        return run_openvino
    raise InvalidArgumentError(f"runtime {runtime!r} is unknown; {CONFIG_NAME} names 'onnxruntime' or 'openvino'")


@dataclass(frozen=True)
class ClassScore:
    """One class of a prediction: its output index, its name (``'class N'`` when the export has no names) and
    its softmax probability."""
    index: int
    label: str
    probability: float


@dataclass
class Prediction:
    """The prediction for one image: ``probabilities`` over all classes and the ``top`` classes, best first."""
    probabilities: np.ndarray
    top: List[ClassScore]

    @property
    def label(self) -> str:
        """The top-1 class name."""
        return self.top[0].label

    @property
    def index(self) -> int:
        """The top-1 class index."""
        return self.top[0].index


class DeployedModel:
    """An exported model on its runtime, with its preprocessing; build it with ``se_zoo.deploy.load``.

    Attributes:
        folder: the export folder.
        config: its ``deploy.json``.
        precision: the precision being run, ``'fp32'``, ``'bf16'`` or ``'int8'``.
        runtime: the runtime running it, ``'onnxruntime'`` or ``'openvino'``.
        label_names: one name per class.
    """

    def __init__(self, folder: Path, config: DeployConfig, precision: str, runner: Runner) -> None:
        self.folder = folder
        self.config = config
        self.precision = precision
        self.runtime = config.runtime(precision)
        self._runner = runner
        self.label_names = list(config.label_names or [f'class {i}' for i in range(config.num_classes)])
        self._transform = None

    def __repr__(self) -> str:
        c, h, w = self.config.preprocessing.input_size
        return (f'DeployedModel({self.config.architecture}, {self.precision} on {self.runtime}, input {c}x{h}x{w}, '
                f'{self.config.num_classes} classes, {str(self.folder)!r})')

    @property
    def session(self):
        """The ONNX Runtime ``InferenceSession`` (fp32, int8), or None on OpenVINO."""
        return getattr(self._runner, 'session', None)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The logits (N x classes) of a preprocessed batch: the runtime alone, nothing converted or copied.

        ``batch`` must be a C-contiguous NCHW float32 numpy array whose C x H x W is ``input_size``
        (``preprocess`` makes one from images). This is what a server calls in its loop and what the
        benchmarks time; ``predict`` and calling the model accept images and other layouts.
        """
        expected = self.input_size
        if (not isinstance(batch, np.ndarray) or batch.dtype != np.float32 or batch.ndim != 4
                or tuple(batch.shape[1:]) != expected or not batch.flags.c_contiguous or not len(batch)):
            if isinstance(batch, np.ndarray):
                shape = 'x'.join(str(d) for d in batch.shape)
                found = f'a {batch.dtype} array of shape {shape}{"" if batch.flags.c_contiguous else " (not contiguous)"}'
            else:
                found = f'a {type(batch).__name__}'
            raise InvalidArgumentError(
                f'run() takes a contiguous float32 numpy array of shape Nx{"x".join(str(d) for d in expected)} '
                f'with N >= 1, not {found}; preprocess images with preprocess(), or call predict()')
        return self._runner(batch)

    @property
    def input_size(self) -> tuple:
        """The (C, H, W) a preprocessed image has."""
        return tuple(self.config.preprocessing.input_size)

    def preprocess(self, images: Union[ImageInput, Sequence[ImageInput]]) -> np.ndarray:
        """Images (PIL or file paths) -> the NCHW float32 batch the model takes, by the export's eval transform."""
        if self._transform is None:
            self._transform = self.config.preprocessing.transform()
        if isinstance(images, (Image.Image, str, Path)):
            images = [images]
        mode = self.config.preprocessing.image_mode
        return torch.stack([self._transform(_open(image).convert(mode)) for image in images]).numpy()

    def __call__(self, inputs: Union[np.ndarray, torch.Tensor, ImageInput, Sequence[ImageInput]]) -> np.ndarray:
        """The logits (N x classes) for a preprocessed batch (NCHW or CHW array/tensor) or for images."""
        batch = self._as_batch(inputs)
        outputs = [self._runner(np.ascontiguousarray(batch[i:i + _CHUNK])) for i in range(0, len(batch), _CHUNK)]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.config.num_classes), np.float32)

    def predict(
            self,
            inputs: Union[np.ndarray, torch.Tensor, ImageInput, Sequence[ImageInput]],
            top_k: int = 5,
    ) -> List[Prediction]:
        """Class probabilities and the ``top_k`` classes of each image (PIL images, image files, or a batch
        already preprocessed to ``input_size``). Images are preprocessed and run together, in batches of up to
        64."""
        check_positive_int('top_k', top_k)
        logits = self(inputs).astype(np.float64)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        k = min(top_k, probabilities.shape[1])
        predictions = []
        for row in probabilities:
            best = np.argsort(-row, kind='stable')[:k]
            predictions.append(Prediction(
                probabilities=row.astype(np.float32),
                top=[ClassScore(int(i), self.label_names[i], float(row[i])) for i in best]))
        return predictions

    def _as_batch(self, inputs) -> np.ndarray:
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.detach().cpu().float().numpy()
        if not isinstance(inputs, np.ndarray):
            return self.preprocess(inputs)
        if inputs.ndim == 3:
            inputs = inputs[None]
        expected = self.input_size
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != expected:
            shape = 'x'.join(str(d) for d in inputs.shape)
            raise InvalidArgumentError(
                f'an input array of shape {shape} does not fit this model, which takes Nx'
                f'{"x".join(str(d) for d in expected)} (preprocessed per {CONFIG_NAME}); pass PIL images or '
                f'image files to have them resized and normalised, or preprocess to that size')
        return np.ascontiguousarray(inputs, dtype=np.float32)


def _open(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    path = Path(image)
    if not path.is_file():
        raise MissingFileError(f'image {path} does not exist')
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidArgumentError(f'cannot read image {path}: {e}') from e


def load(
        path: Union[str, Path],
        *,
        precision: Optional[str] = None,
        num_threads: Optional[int] = None,
        providers: Optional[Sequence[str]] = None,
        session_options=None,
        openvino_config: Optional[Mapping[str, Any]] = None,
) -> DeployedModel:
    """Open an export folder written by ``se_zoo.deploy.export`` (``se-zoo export``) on its runtime.

    Args:
        path: the export folder (or its ``deploy.json``).
        precision: ``'fp32'``, ``'bf16'`` or ``'int8'``; by default the export's ``default_precision`` (the one
            ``precision='auto'`` measured fastest, or the one asked for at export).
        num_threads: the runtime's threads (default: its own choice, one per physical core).
        providers: ONNX Runtime execution providers (default: CPU).
        session_options: an ``onnxruntime.SessionOptions`` to start from (``num_threads`` still applies).
        openvino_config: OpenVINO CPU properties added to se_zoo's (bf16 inference precision, LATENCY hint).

    Raises:
        MissingFileError: no export at ``path``.
        InvalidArgumentError: the export has no file of the asked precision, or bf16 on a CPU without bf16.
        MissingDependencyError: the precision's runtime is not installed (``se-zoo[deploy]``,
            ``se-zoo[openvino]``).
    """
    folder = Path(path)
    if folder.is_file() and folder.name == CONFIG_NAME:
        folder = folder.parent
    if not folder.exists():
        raise MissingFileError(f'export folder {folder} does not exist')
    config = DeployConfig.read(folder)
    precision = precision or config.default_precision
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f'precision={precision!r} is not one of {", ".join(PRECISIONS)}')
    if precision not in config.files:
        raise InvalidArgumentError(
            f'{folder} has no {precision} model (it holds {", ".join(config.files)}); '
            f'export it with precision={precision!r} (--precision {precision}) for one')
    model_path = folder / config.file(precision)
    if not model_path.is_file():
        raise MissingFileError(f'{model_path} is missing from the export folder {folder}')
    runner = open_runner(
        model_path, config.runtime(precision), precision, input_name=config.input_name, num_threads=num_threads,
        providers=providers, session_options=session_options, openvino_config=openvino_config)
    return DeployedModel(folder, config, precision, runner)
