"""Run an export: ``load('out/')`` gives a callable ONNX Runtime session that preprocesses like the model was trained.

``model = load('out/')`` reads ``deploy.json`` and opens the int8 file when the export has one (else float32);
``model.predict(images)`` takes PIL images or image files (resized and normalised per the sidecar) and returns
each image's class probabilities and top-k labels; ``model(batch)`` takes an already preprocessed NCHW batch and
returns the logits.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InvalidArgumentError, MissingFileError
from ._dependencies import require
from .config import CONFIG_NAME, PRECISIONS, DeployConfig

__all__ = ['ClassScore', 'DeployedModel', 'Prediction', 'load']

ImageInput = Union[Image.Image, str, Path]
# Batches run through the session in chunks of this many images, which bounds memory for long lists.
_CHUNK = 64


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
    """An exported model in ONNX Runtime with its preprocessing; build it with ``se_zoo.deploy.load``.

    Attributes:
        folder: the export folder.
        config: its ``deploy.json``.
        precision: the precision of the ONNX file being run, ``'fp32'`` or ``'int8'``.
        label_names: one name per class.
    """

    def __init__(self, folder: Path, config: DeployConfig, precision: str, session) -> None:
        self.folder = folder
        self.config = config
        self.precision = precision
        self.session = session
        self.label_names = list(config.label_names or [f'class {i}' for i in range(config.num_classes)])
        self._transform = None

    def __repr__(self) -> str:
        c, h, w = self.config.preprocessing.input_size
        return (f'DeployedModel({self.config.architecture}, {self.precision}, input {c}x{h}x{w}, '
                f'{self.config.num_classes} classes, {str(self.folder)!r})')

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
        outputs = [self.session.run(None, {self.config.input_name: batch[i:i + _CHUNK]})[0]
                   for i in range(0, len(batch), _CHUNK)]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.config.num_classes), np.float32)

    def predict(
            self,
            inputs: Union[np.ndarray, torch.Tensor, ImageInput, Sequence[ImageInput]],
            top_k: int = 5,
    ) -> List[Prediction]:
        """Class probabilities and the ``top_k`` classes of each image (PIL images, image files, or a batch
        already preprocessed to ``input_size``)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidArgumentError(f'top_k={top_k!r} must be a positive integer')
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
) -> DeployedModel:
    """Open an export folder written by ``se_zoo.deploy.export`` (``se-zoo export``) in ONNX Runtime.

    Args:
        path: the export folder (or its ``deploy.json``).
        precision: ``'fp32'`` or ``'int8'``; by default the export's ``default_precision`` (int8 where written).
        num_threads: ONNX Runtime intra-op threads (default: ONNX Runtime's choice, one per physical core).
        providers: ONNX Runtime execution providers (default: CPU).
        session_options: an ``onnxruntime.SessionOptions`` to start from (``num_threads`` still applies).

    Raises:
        MissingFileError: no export at ``path``.
        InvalidArgumentError: the export has no file of the asked precision.
        MissingDependencyError: onnxruntime is not installed (``se-zoo[deploy]``).
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
            f'export with int8=True (--int8) for one')
    onnx_path = folder / config.files[precision]
    if not onnx_path.is_file():
        raise MissingFileError(f'{onnx_path} is missing from the export folder {folder}')
    ort = require('onnxruntime')
    options = session_options if session_options is not None else ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
    session = ort.InferenceSession(str(onnx_path), options, providers=list(providers or ['CPUExecutionProvider']))
    return DeployedModel(folder, config, precision, session)
