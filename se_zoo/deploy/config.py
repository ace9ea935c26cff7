"""The sidecar of an export, ``deploy.json``: everything a deployer needs besides the ONNX files themselves.

It records the preprocessing the model was trained with (input size, mean/std, interpolation, crop), the label
names where known, which file and which runtime run each precision, what the export was checked against, and how
the default precision was chosen (every timing and accuracy figure ``precision='auto'`` measured). It is plain
JSON, readable without se_zoo; ``Preprocessing.transform()`` rebuilds timm's eval transform from it.
"""
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch.nn as nn

from ..errors import InvalidArgumentError, MissingFileError

__all__ = [
    'CONFIG_NAME', 'FORMAT', 'ONNX_FILES', 'PRECISIONS', 'RUNTIMES', 'DeployConfig', 'Preprocessing',
    'model_label_names']

CONFIG_NAME = 'deploy.json'
FORMAT = 'se_zoo.deploy/2'
# Format 1 named one ONNX Runtime file per precision; it is read as such.
_FORMAT_1 = 'se_zoo.deploy/1'
PRECISIONS = ('fp32', 'bf16', 'int8')
# The file each precision runs. bf16 is the float32 graph, run by OpenVINO with bf16 as its inference precision:
# OpenVINO converts the weights once at load, so a second copy of them on disk would gain nothing.
ONNX_FILES = {'fp32': 'model.onnx', 'bf16': 'model.onnx', 'int8': 'model.int8.onnx'}
# The runtime each precision runs on (measured fastest on an AVX512-BF16 CPU: docs/deploy.md).
RUNTIMES = {'fp32': 'onnxruntime', 'bf16': 'openvino', 'int8': 'onnxruntime'}


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
        files: per precision, ``{'file': ONNX file name, 'runtime': 'onnxruntime' | 'openvino', ...}``
            (``fp32`` always; ``bf16`` and ``int8`` when exported); a bf16 entry also names its
            ``inference_precision``.
        default_precision: the precision ``se_zoo.deploy.load`` runs unless told otherwise.
        input_name, output_name: the ONNX graph's input (N x C x H x W, dynamic N) and output (N x classes).
        checks: what the export was verified against (photos, measured differences, tolerance).
        int8: how the int8 file was made (calibration data, nodes kept in float), when there is one.
        selection: how ``default_precision`` was chosen: ``'auto'`` (with every timing and accuracy figure it
            measured) or the precision that was asked for.
    """
    architecture: str
    source: str
    preprocessing: Preprocessing
    label_names: Optional[List[str]]
    num_classes: int
    files: Dict[str, Dict[str, str]] = field(default_factory=dict)
    default_precision: str = 'fp32'
    input_name: str = 'input'
    output_name: str = 'logits'
    checks: Dict[str, Any] = field(default_factory=dict)
    int8: Optional[Dict[str, Any]] = None
    selection: Dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def file(self, precision: str) -> str:
        """The file name that runs ``precision``."""
        return self.files[precision]['file']

    def runtime(self, precision: str) -> str:
        """The runtime (``'onnxruntime'`` or ``'openvino'``) that runs ``precision``."""
        return self.files[precision]['runtime']

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + '\n'

    @classmethod
    def from_json(cls, text: str, origin: str = CONFIG_NAME) -> 'DeployConfig':
        try:
            values = json.loads(text)
        except ValueError as e:
            raise InvalidArgumentError(f'{origin} is not JSON: {e}') from e
        if not isinstance(values, dict) or values.get('format') not in (FORMAT, _FORMAT_1):
            found = values.get('format') if isinstance(values, dict) else None
            raise InvalidArgumentError(f'{origin} is format {found!r}; this se_zoo reads {FORMAT!r}')
        if values['format'] == _FORMAT_1:
            values['files'] = {p: dict(file=name, runtime='onnxruntime') for p, name in values.get('files', {}).items()}
            values['format'] = FORMAT
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
