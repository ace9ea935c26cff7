"""Deployment: export an se_zoo (or timm) model to ONNX, quantize it to int8 with ONNX Runtime, and run it.

>>> from se_zoo.deploy import export, load
>>> export('se_resnet50.ra2_in1k', 'out/')                          # model.onnx + deploy.json, checked on photos
>>> export('runs/x/best', 'out8/', int8=True, calibration='fashion-mnist')
>>> load('out8/').predict(['cat.jpg'])[0].top[:3]                  # int8 by default where there is one

Needs the ``deploy`` extra (``pip install 'se-zoo[deploy]'``: onnx, onnxscript, onnxruntime, scikit-image).
"""
from .config import CONFIG_NAME, DeployConfig, Preprocessing
from .evaluate import evaluate
from .export import DEFAULT_CALIBRATION_SAMPLES, DEFAULT_TOLERANCE, ExportMismatchError, ExportResult, export
from .quantize import DEFAULT_INT8_RULE, INT8_RULES, Int8Rule, quantize_onnx
from .runtime import ClassScore, DeployedModel, Prediction, load

__all__ = [
    'CONFIG_NAME', 'ClassScore', 'DEFAULT_CALIBRATION_SAMPLES', 'DEFAULT_INT8_RULE', 'DEFAULT_TOLERANCE',
    'DeployConfig', 'DeployedModel', 'ExportMismatchError', 'ExportResult', 'INT8_RULES', 'Int8Rule', 'Prediction',
    'Preprocessing', 'evaluate', 'export', 'load', 'quantize_onnx',
]
