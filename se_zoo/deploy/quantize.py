"""Int8 through ONNX Runtime's own static quantization (QDQ, per-channel weights), with one SE-specific change.

The rule ``DEFAULT_INT8_RULE`` (``'all'``) was chosen by measurement (benchmarks/bench_deploy.py, docs/deploy.md):

- Quantize everything ONNX Runtime can, the SE blocks included. Keeping the SE blocks (or the activations without
  an int8 kernel) in float was slower for every family: ONNX Runtime runs the int8 part of the graph channels-last,
  so each float island costs a DequantizeLinear of the full feature map, a transpose back to NCHW and a
  QuantizeLinear afterwards, more than the small SE arithmetic saves.
- But write each SE squeeze (``x.mean((2, 3))``, exported as ``ReduceMean``) as the ``GlobalAveragePool`` it equals.
  ONNX Runtime leaves ReduceMean in float, so with its defaults every SE block dequantizes its whole input feature
  map only to average it; GlobalAveragePool has an int8 kernel that reads the int8 map directly.

The other rules of ``INT8_RULES`` stay available for models where the measurement comes out otherwise.
"""
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Union

import numpy as np

from ..errors import InvalidArgumentError
from ._dependencies import require

__all__ = ['INT8_RULES', 'DEFAULT_INT8_RULE', 'Int8Rule', 'quantize_onnx', 'se_nodes']


@dataclass(frozen=True)
class Int8Rule:
    """Which nodes ONNX Runtime's quantizer may turn into int8, and how the graph is prepared for it.

    Attributes:
        op_types: operator types to quantize; None is ONNX Runtime's default (every type it supports).
        se_float: keep every node of each SE block (squeeze, both FC convs, their activation, the gate and the
            gate multiply) in float.
        activations_float: keep the activations that have no int8 kernel of their own (SiLU as
            ``x * sigmoid(x)``, HardSwish) in float.
        squeeze_as_pool: write each spatial mean (``ReduceMean`` over H, W) as the ``GlobalAveragePool`` it
            equals, which ONNX Runtime runs in int8 straight from the int8 feature map.
        pre_process: run ``onnxruntime.quantization.quant_pre_process`` (shape inference and graph
            optimisation) first.
    """
    op_types: Optional[Sequence[str]] = None
    se_float: bool = False
    activations_float: bool = False
    squeeze_as_pool: bool = True
    pre_process: bool = False


_MATRIX_OPS = ('Conv', 'Gemm', 'MatMul')
INT8_RULES: Dict[str, Int8Rule] = {
    # ONNX Runtime's defaults on the graph as exported: everything it can quantize.
    'ort-default': Int8Rule(squeeze_as_pool=False),
    # Everything, with the squeezes as GlobalAveragePool: the measured best, the default.
    'all': Int8Rule(),
    # Everything, after ONNX Runtime's own pre-processing (shape inference, graph optimisation).
    'all-preprocessed': Int8Rule(pre_process=True),
    # Everything but the SE blocks.
    'all-se-float': Int8Rule(se_float=True),
    # Everything but the activations without an int8 kernel.
    'all-act-float': Int8Rule(activations_float=True),
    # Only the matrix products: activations, adds and SE multiplies stay in float.
    'conv': Int8Rule(op_types=_MATRIX_OPS),
    # The matrix products outside the SE blocks; the SE blocks entirely in float.
    'conv-se-float': Int8Rule(op_types=_MATRIX_OPS, se_float=True),
}
DEFAULT_INT8_RULE = 'all'

# Operators an SE block's excitation path may consist of between the squeeze and the gate: 1x1 convs or FCs,
# their activations (ReLU, SiLU as x * sigmoid(x), HardSwish) and the reshapes an FC needs.
_SE_BODY_OPS = {'Conv', 'Gemm', 'MatMul', 'Relu', 'Sigmoid', 'HardSigmoid', 'HardSwish', 'Mul', 'Clip',
                'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Add'}
_SQUEEZE_OPS = {'ReduceMean', 'GlobalAveragePool'}
_GATE_OPS = {'Sigmoid', 'HardSigmoid'}
# An excitation path is short: squeeze, FC, act (2 nodes for SiLU), FC, gate.
_MAX_SE_DEPTH = 8


def se_nodes(model) -> Set[str]:
    """Names of the nodes of every SE block in the ONNX ``model`` (a ``ModelProto``), found by structure.

    An SE block is a gate (Sigmoid/HardSigmoid) whose input is computed, within a few small operators, from
    nothing but one squeeze (ReduceMean/GlobalAveragePool) and constants, together with the multiplies that apply
    the gate. A SiLU (``x * sigmoid(x)``) is no gate: its input traces back to a full feature map, not a squeeze.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: Dict[str, List] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == 'Constant' for out in node.output}

    found: Set[str] = set()
    for gate in graph.node:
        if gate.op_type not in _GATE_OPS:
            continue
        body = _excitation_path(gate, producer, constants)
        if body is None:
            continue
        found |= body
        found |= {c.name for c in consumers.get(gate.output[0], []) if c.op_type == 'Mul'}
    return found


def _excitation_path(gate, producer, constants) -> Optional[Set[str]]:
    """The nodes between a squeeze and ``gate`` (inclusive), or None if ``gate`` is not fed by one squeeze."""
    body, squeezes = {gate.name}, set()
    frontier = [(name, 1) for name in gate.input]
    while frontier:
        name, depth = frontier.pop()
        if name in constants or name == '':
            continue
        node = producer.get(name)
        if node is None or depth > _MAX_SE_DEPTH:
            return None  # reaches a graph input or runs too long: not an excitation path
        if node.op_type in _SQUEEZE_OPS:
            squeezes.add(node.name)
            continue
        if node.op_type not in _SE_BODY_OPS:
            return None
        if node.name not in body:
            body.add(node.name)
            frontier.extend((i, depth + 1) for i in node.input)
    if len(squeezes) != 1:
        return None
    return body | squeezes


def unfused_activation_nodes(model) -> Set[str]:
    """Names of the activation nodes ONNX Runtime has no int8 kernel for: HardSwish, and SiLU written as
    ``Mul(x, Sigmoid(x))`` (both nodes)."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    found = {node.name for node in graph.node if node.op_type == 'HardSwish'}
    for node in graph.node:
        if node.op_type != 'Mul' or len(node.input) != 2:
            continue
        for a, b in (node.input, node.input[::-1]):
            sigmoid = producer.get(b)
            if sigmoid is not None and sigmoid.op_type == 'Sigmoid' and sigmoid.input[0] == a:
                found |= {node.name, sigmoid.name}
    return found


def spatial_means_as_pools(model) -> int:
    """Rewrite, in place, each ``ReduceMean`` over the two spatial axes of a 4-d tensor as the
    ``GlobalAveragePool`` (plus ``Flatten`` where the mean drops those axes) it equals; returns how many.

    torch's exporter writes ``x.mean((2, 3))`` (SE squeezes, timm's head pool) as ReduceMean, which ONNX Runtime
    keeps in float: each squeeze of an int8 feature map then dequantizes the whole map first. GlobalAveragePool
    has an int8 kernel that reads the int8 map directly.
    """
    onnx = require('onnx')
    from onnx import numpy_helper
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    ranks = _known_ranks(model)
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != 'ReduceMean' or node.domain not in ('', 'ai.onnx'):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get('axes')
        if axes is None and len(node.input) > 1 and node.input[1] in constants:
            axes = constants[node.input[1]].tolist()
        if axes is None or ranks.get(node.input[0]) != 4 or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        keepdims = attrs.get('keepdims', 1)
        pooled = node.output[0] if keepdims else node.output[0] + '_pooled'
        replacement = [onnx.helper.make_node('GlobalAveragePool', [node.input[0]], [pooled], name=node.name)]
        if not keepdims:
            replacement.append(onnx.helper.make_node(
                'Flatten', [pooled], [node.output[0]], name=node.name + '_flatten', axis=1))
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(position + offset, new)
        rewritten += 1
    if rewritten:
        # The axes the rewritten means read are unused now; ONNX Runtime would warn about each one.
        used = {name for node in graph.node for name in node.input}
        for init in [i for i in graph.initializer if i.name not in used]:
            graph.initializer.remove(init)
    return rewritten


def _known_ranks(model) -> Dict[str, int]:
    """The rank of every tensor shape inference can tell."""
    onnx = require('onnx')
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField('shape'):
            ranks[value.name] = len(tensor_type.shape.dim)
    return ranks


class _PreprocessingAdvice(logging.Filter):
    """Drops ONNX Runtime's advice to run ``quant_pre_process`` first: the exported graph already has its shapes
    and optimisations, and pre-processing made no measurable difference here (``INT8_RULES``' numbers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'pre-processing' not in record.getMessage()


@contextlib.contextmanager
def _without_preprocessing_advice():
    advice = _PreprocessingAdvice()
    root = logging.getLogger()  # the quantizer logs through the root logger
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _calibration_reader(input_name: str, batches: Iterable[np.ndarray]):
    """An ONNX Runtime ``CalibrationDataReader`` over an iterable of NCHW float32 batches, read once."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    return Reader()


def quantize_onnx(
        fp32_path: Union[str, Path],
        int8_path: Union[str, Path],
        calibration_batches: Iterable[np.ndarray],
        *,
        input_name: str = 'input',
        rule: Union[str, Int8Rule] = DEFAULT_INT8_RULE,
) -> List[str]:
    """Quantize the ONNX file ``fp32_path`` to ``int8_path`` with ONNX Runtime's static quantization.

    QDQ format, per-channel symmetric int8 weights, uint8 activations (the u8 x s8 pairing that x86 VNNI kernels
    take), MinMax ranges from ``calibration_batches`` (an iterable of NCHW float32 arrays, preprocessed like the
    model's input).

    Args:
        fp32_path: the float ONNX file.
        int8_path: where to write the quantized file.
        calibration_batches: real images, preprocessed; a few hundred suffice.
        input_name: the graph input the batches feed.
        rule: a name from ``INT8_RULES`` or an ``Int8Rule``: which nodes to quantize and which to keep in float.

    Returns:
        The names of the nodes the rule kept in float (SE blocks, activations), sorted.
    """
    onnx = require('onnx')
    require('onnxruntime')
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if isinstance(rule, str):
        if rule not in INT8_RULES:
            raise InvalidArgumentError(f'int8 rule {rule!r} is unknown; use one of {", ".join(INT8_RULES)}')
        rule = INT8_RULES[rule]
    source = Path(fp32_path)
    if rule.pre_process:
        pre_path = Path(int8_path).with_suffix('.pre.onnx')
        quant_pre_process(str(source), str(pre_path))
        source = pre_path
    model = onnx.load(str(source))
    if rule.squeeze_as_pool:
        spatial_means_as_pools(model)
    excluded = set()
    if rule.se_float:
        excluded |= se_nodes(model)
    if rule.activations_float:
        excluded |= unfused_activation_nodes(model) - se_nodes(model)
    excluded = sorted(excluded)
    try:
        with _without_preprocessing_advice():
            quantize_static(
                model,
                str(int8_path),
                _calibration_reader(input_name, calibration_batches),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(rule.op_types) if rule.op_types else None,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                # MinMax reduces each tensor to its range inside the calibration graph, so memory stays small
                # however many calibration images there are.
                calibrate_method=CalibrationMethod.MinMax,
            )
    finally:
        if source != Path(fp32_path):
            source.unlink(missing_ok=True)
    return excluded
