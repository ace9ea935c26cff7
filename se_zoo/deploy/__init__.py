"""Deployment: export an se_zoo (or timm) model to ONNX, add bf16 (OpenVINO) and int8 (ONNX Runtime), choose the
precision that runs fastest on this machine without losing accuracy, and run it.

>>> from se_zoo.deploy import export, load
>>> export('se_resnet50.ra2_in1k', 'out/')                      # fp32 + bf16 where the CPU has it, timed: fastest wins
>>> export('runs/x/best', 'out8/', calibration='fashion-mnist', evaluate='fashion-mnist', batch_sizes=(1, 8))
>>> model = load('out8/')                                       # the precision the export chose, on its runtime
>>> model.predict(['cat.jpg'])[0].top[:3]
>>> model.run(batch)                                            # preprocessed NCHW float32 -> logits, nothing else

Needs the ``deploy`` extra (``pip install 'se-zoo[deploy]'``: onnx, onnxscript, onnxruntime, scikit-image), and
the ``openvino`` extra for bf16.

The submodules: ``exporting`` (``export``), ``selection`` (how ``precision='auto'`` chooses), ``runtime``
(``load``, ``DeployedModel``), ``evaluation`` (``evaluate``), ``quantize`` (int8), ``config`` (``deploy.json``),
``timing`` (interleaved timing), ``datasets``.
"""
from .config import CONFIG_NAME, PRECISIONS, DeployConfig, Preprocessing
from .evaluation import evaluate
from .exporting import (
    BF16_TOLERANCE, DEFAULT_CALIBRATION_SAMPLES, DEFAULT_TOLERANCE, PRECISION_CHOICES, ExportMismatchError,
    ExportResult, export)
from .quantize import DEFAULT_INT8_RULE, INT8_RULES, Int8Rule, quantize_onnx
from .runtime import ClassScore, DeployedModel, Prediction, bf16_unsupported_reason, load

__all__ = [
    'BF16_TOLERANCE', 'CONFIG_NAME', 'ClassScore', 'DEFAULT_CALIBRATION_SAMPLES', 'DEFAULT_INT8_RULE',
    'DEFAULT_TOLERANCE', 'DeployConfig', 'DeployedModel', 'ExportMismatchError', 'ExportResult', 'INT8_RULES',
    'Int8Rule', 'PRECISIONS', 'PRECISION_CHOICES', 'Prediction', 'Preprocessing', 'bf16_unsupported_reason',
    'evaluate', 'export', 'load', 'quantize_onnx',
]
