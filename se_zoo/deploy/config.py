"""The sidecar of an export, ``deploy.json``: everything a deployer needs besides the ONNX files themselves.

It records the preprocessing the model was trained with (input size, mean/std, interpolation, crop), the label
names where known, which ONNX file holds which precision, and what the export was checked against. It is plain
JSON, readable without se_zoo; ``Preprocessing.transform()`` rebuilds timm's eval transform from it.
"""
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch.nn as nn

from ..errors import InvalidArgumentError, MissingFileError

__all__ = ['CONFIG_NAME', 'FORMAT', 'ONNX_FILES', 'PRECISIONS', 'DeployConfig', 'Preprocessing', 'model_label_names']

CONFIG_NAME = 'deploy.json'
FORMAT = 'se_zoo.deploy/1'
PRECISIONS = ('fp32', 'int8')
ONNX_FILES = {'fp32': 'model.onnx', 'int8': 'model.int8.onnx'}


@dataclass
class Preprocessing:
    """timm's eval transform, as numbers: resize the shorter side to ``floor(size / crop_pct)`` with
    ``interpolation``, centre-crop ``input_size`` (``crop_mode`` 'center'; 'squash' resizes both sides, 'border'
    pads), scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel; the result is NCHW float32."""
    input_size: Tuple[int, int, int]
    interpolation: str
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    crop_pct: float
    crop_mode: str

    @classmethod
    def from_model(cls, model: nn.Module) -> 'Preprocessing':
        from timm.data import resolve_model_data_config
        cfg = resolve_model_data_config(model)
        return cls(
            input_size=tuple(int(v) for v in cfg['input_size']),
            interpolation=str(cfg['interpolation']),
            mean=tuple(float(v) for v in cfg['mean']),
            std=tuple(float(v) for v in cfg['std']),
            crop_pct=float(cfg['crop_pct']),
            crop_mode=str(cfg.get('crop_mode') or 'center'),
        )

    def transform(self) -> Callable:
        """timm's eval transform for these settings (PIL image in, CHW float tensor out)."""
        from timm.data import create_transform
        return create_transform(**dataclasses.asdict(self), is_training=False)

    @property
    def image_mode(self) -> str:
        """The PIL mode images are converted to first (a 1-channel model takes greyscale)."""
        return 'L' if self.input_size[0] == 1 else 'RGB'


@dataclass
class DeployConfig:
    """The contents of ``deploy.json``.

    Attributes:
        architecture: the timm model name the export was made from.
        source: what was exported (a model name, folder or Hub reference), for the record.
        preprocessing: how to turn an image into the model's input.
        label_names: one name per output, or None when the model's pretrained_cfg has none.
        files: ONNX file name per precision (``fp32`` always; ``int8`` when quantized).
        default_precision: the file ``se_zoo.deploy.load`` runs unless told otherwise.
        input_name, output_name: the ONNX graph's input (N x C x H x W, dynamic N) and output (N x classes).
        checks: what the export was verified against (photos, measured differences, tolerance).
        int8: how the int8 file was made (calibration data, nodes kept in float), when there is one.
    """
    architecture: str
    source: str
    preprocessing: Preprocessing
    label_names: Optional[List[str]]
    num_classes: int
    files: Dict[str, str] = field(default_factory=dict)
    default_precision: str = 'fp32'
    input_name: str = 'input'
    output_name: str = 'logits'
    checks: Dict[str, Any] = field(default_factory=dict)
    int8: Optional[Dict[str, Any]] = None
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + '\n'

    @classmethod
    def from_json(cls, text: str, origin: str = CONFIG_NAME) -> 'DeployConfig':
        try:
            values = json.loads(text)
        except ValueError as e:
            raise InvalidArgumentError(f'{origin} is not JSON: {e}') from e
        if not isinstance(values, dict) or values.get('format') != FORMAT:
            found = values.get('format') if isinstance(values, dict) else None
            raise InvalidArgumentError(f'{origin} is format {found!r}; this se_zoo reads {FORMAT!r}')
        try:
            preprocessing = dict(values.pop('preprocessing'))
            preprocessing['input_size'] = tuple(preprocessing['input_size'])
            return cls(preprocessing=Preprocessing(**preprocessing), **values)
        except (KeyError, TypeError) as e:
            raise InvalidArgumentError(f'{origin} is not a complete se_zoo deploy config: {e}') from e

    @classmethod
    def read(cls, folder: Union[str, Path]) -> 'DeployConfig':
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise MissingFileError(
                f'{folder} holds no {CONFIG_NAME}; give a folder written by se_zoo.deploy.export / se-zoo export')
        return cls.from_json(path.read_text(), origin=str(path))


def model_label_names(model: nn.Module, num_classes: int) -> Optional[List[str]]:
    """The model's class names: its ``pretrained_cfg['label_names']`` (fine-tuned se_zoo folders carry them),
    else ImageNet's human-readable names for an ImageNet-1k/22k head (timm ships them), else None."""
    pretrained_cfg = getattr(model, 'pretrained_cfg', None) or {}
    names = pretrained_cfg.get('label_names')
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    from timm.data import ImageNetInfo, infer_imagenet_subset
    subset = infer_imagenet_subset(model)
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    if info.num_classes() != num_classes:
        return None
    return list(info.label_descriptions())
