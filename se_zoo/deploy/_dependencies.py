"""The optional packages of ``se_zoo.deploy``, imported on first use with an error that names their extra."""
import importlib
from types import ModuleType

from ..errors import MissingDependencyError

__all__ = ['require']

# What each optional module is needed for, so that the error says why it is missing, not only that it is.
_PURPOSE = {
    'onnx': 'writing ONNX files',
    'onnxscript': "torch's ONNX exporter",
    'onnxruntime': 'running and quantizing ONNX files',
    'skimage': "the photos (skimage.data) that every export is checked on",
    'openvino': 'bf16 (OpenVINO runs it)',
}
# The extra that installs each module.
_EXTRA = {'openvino': 'openvino'}


def require(name: str) -> ModuleType:
    """Import the optional module ``name`` or raise ``MissingDependencyError`` naming the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingDependencyError(
            f'{name} is needed for {_PURPOSE.get(name, "se_zoo.deploy")} but is not installed; '
            f"install it with `pip install 'se-zoo[{_EXTRA.get(name, 'deploy')}]'`") from e
