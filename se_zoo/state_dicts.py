"""State-dict mappings: pure functions that turn another library's state dict into se_zoo's.

One place for every layout se_zoo reads, used both by ``se-zoo convert`` and by pretrained loading (timm's
``pretrained_filter_fn`` hook, see ``pretrained_filter``):

- ``timm``: se_zoo's state dicts are timm's, except that timm's EfficientNet/MobileNetV3 SE convs are named
  ``conv_reduce``/``conv_expand`` where se_zoo (and timm's ResNet SE) say ``fc1``/``fc2``;
- ``torchvision``: ``features.N[.M].block.J`` mapped block by block onto timm's ``blocks.S.B`` (torchvision's
  MobileNetV3 head ``Linear`` becomes timm's 1x1 ``conv_head``);
- ``senet``: senet.pytorch's torchvision-style ResNet with a bias-free ``nn.Linear`` SE (``se.fc.0``, ``se.fc.2``);
- ``legacy``: the original SENets as timm's ``legacy_se*`` models hold them (Cadene's pretrainedmodels layout):
  stem ``layer0.*`` (onto timm's ``conv1``/``bn1``; SENet-154's three 3x3 convs onto ``conv1.0/.1/.3/.4/.6``
  and ``bn1``), SE ``se_module.fc1/fc2``, classifier ``last_linear``; the blocks are otherwise timm's. The
  weights compute their original function only with the layout keywords of ``se_zoo.models.se_resnet``
  (``stem_pool_ceil``, ``stride_in_1x1``, ``act_before_se``, ``rd_divisor=1``), which their manifest entries carry;
- ``retrofit``: a network without SE (timm ResNet, MobileNetV1/V2, Inception) into its se_zoo counterpart, with
  every SE inserted as an exact identity (see ``retrofit_state_dict``).

Nothing here builds a model or touches a file.
"""
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .errors import InvalidArgumentError

__all__ = [
    'LAYOUTS', 'ConversionError', 'detect_layout', 'format_key_report', 'map_state_dict', 'rename_keys',
    'rename_state_dict', 'retrofit_state_dict', 'pretrained_filter',
]

LAYOUTS = ('timm', 'torchvision', 'senet', 'legacy')


class ConversionError(InvalidArgumentError):
    """A checkpoint that does not map exactly onto an se_zoo model; the message lists what did not match."""


# ---------------------------------------------------------------------------------------------------------------
# Layouts: key and shape mapping from a source state_dict onto a se_zoo (timm-layout) state_dict.

_SENET_SE = re.compile(r'(.*\.se\.)fc\.([02])\.(weight|bias)$')
_TIMM_EFFNET_SE = re.compile(r'(.*\.se\.)conv_(reduce|expand)\.(weight|bias)$')


def detect_layout(keys: Sequence[str]) -> str:
    """The layout (one of ``LAYOUTS``) that a state_dict's keys are written in."""
    keys = list(keys)
    if any(_SENET_SE.match(k) for k in keys):
        return 'senet'
    if any(k.startswith('layer0.') for k in keys):
        return 'legacy'
    if any(k.startswith('features.') and '.block.' in k for k in keys):
        return 'torchvision'
    if any(k.startswith(('conv_stem.', 'blocks.', 'layer1.')) for k in keys):
        return 'timm'
    raise ConversionError(
        f'cannot tell the layout of a checkpoint whose keys start {sorted(keys)[:5]}; '
        f'name it with --source-format ({", ".join(LAYOUTS)})')


# A mapper returns the state_dict under se_zoo's keys and the source keys it has no place for.
_Mapping = Tuple[Dict[str, torch.Tensor], List[str]]


def _linear_as_conv(weight: torch.Tensor) -> torch.Tensor:
    # A Linear on pooled features is a 1x1 conv: (out, in) -> (out, in, 1, 1).
    return weight[:, :, None, None] if weight.ndim == 2 else weight


def _map_timm(state_dict: Dict[str, torch.Tensor], target_keys: Sequence[str]) -> _Mapping:
    mapped = {}
    for key, value in state_dict.items():
        m = _TIMM_EFFNET_SE.match(key)
        mapped[f'{m[1]}fc{1 if m[2] == "reduce" else 2}.{m[3]}' if m else key] = value
    return mapped, []


def _map_senet(state_dict: Dict[str, torch.Tensor], target_keys: Sequence[str]) -> _Mapping:
    # Everything but the SE is torchvision's ResNet naming, which timm's ResNet shares.
    mapped = {}
    for key, value in state_dict.items():
        m = _SENET_SE.match(key)
        if m:
            key = f'{m[1]}fc{1 if m[2] == "0" else 2}.{m[3]}'
            value = _linear_as_conv(value)
        mapped[key] = value
    return mapped, []


# legacy: `layer0` holds the stem convs and norms by their own names; a deep stem (SENet-154) maps onto timm's
# `conv1` Sequential (conv, bn, act, conv, bn, act, conv) and its last norm onto `bn1`.
_LEGACY_STEM = {'conv1': 'conv1', 'bn1': 'bn1'}
_LEGACY_DEEP_STEM = {'conv1': 'conv1.0', 'bn1': 'conv1.1', 'conv2': 'conv1.3', 'bn2': 'conv1.4', 'conv3': 'conv1.6',
                     'bn3': 'bn1'}


def _map_legacy(state_dict: Dict[str, torch.Tensor], target_keys: Sequence[str]) -> _Mapping:
    stem = _LEGACY_DEEP_STEM if 'conv1.0.weight' in target_keys else _LEGACY_STEM
    mapped, unmatched = {}, []
    for key, value in state_dict.items():
        if key.startswith('layer0.'):
            module, _, param = key[len('layer0.'):].partition('.')
            if module not in stem:
                unmatched.append(key)
                continue
            key = f'{stem[module]}.{param}'
        elif key.startswith('last_linear.'):
            key = 'fc.' + key[len('last_linear.'):]
        else:
            key = key.replace('.se_module.', '.se.')
        mapped[key] = value
    return mapped, unmatched


# torchvision: one entry of `features` is a ConvNormActivation (`features.N.0` conv, `features.N.1` norm) or a
# block (`features.N.block.J` or, with stages, `features.N.M.block.J`); inside a block, `block.J` is again a
# ConvNormActivation or a SqueezeExcitation (`fc1`, `fc2`).
_TV_FEATURE = re.compile(r'features\.(\d+)\.(?:(\d+)\.)?block\.(\d+)\.(.+)$|features\.(\d+)\.([01])\.(.+)$')
_TV_CLASSIFIER = re.compile(r'classifier\.(\d+)\.(weight|bias)$')

# timm's conv/norm pairs per block type, in forward order.
_TIMM_BLOCK_CONVS = {
    'inverted_residual': (('conv_pw', 'bn1'), ('conv_dw', 'bn2'), ('conv_pwl', 'bn3')),
    'depthwise_separable': (('conv_dw', 'bn1'), ('conv_pw', 'bn2')),
    'conv_bn_act': (('conv', 'bn1'),),
}


def _timm_units(target_keys: Sequence[str]) -> Tuple[List[Tuple[str, Tuple[Tuple[str, str], ...]]], List[str]]:
    """timm EfficientNet/MobileNetV3 as (prefix, conv/norm pairs) units in forward order, and its Linear layers."""
    keys = set(target_keys)
    units = [('', (('conv_stem', 'bn1'),))]
    blocks = sorted({tuple(int(i) for i in k.split('.')[1:3]) for k in keys if k.startswith('blocks.')})
    for stage, index in blocks:
        prefix = f'blocks.{stage}.{index}.'
        kind = ('inverted_residual' if prefix + 'conv_pwl.weight' in keys else
                'depthwise_separable' if prefix + 'conv_dw.weight' in keys else 'conv_bn_act')
        units.append((prefix, _TIMM_BLOCK_CONVS[kind]))
    if 'bn2.weight' in keys:  # EfficientNet: conv_head + bn2 before pooling
        units.append(('', (('conv_head', 'bn2'),)))
    # MobileNetV3: conv_head (no norm) after pooling, the counterpart of torchvision's first classifier Linear.
    linears = (['conv_head'] if 'conv_head.weight' in keys and 'bn2.weight' not in keys else []) + ['classifier']
    return units, linears


def _map_torchvision(state_dict: Dict[str, torch.Tensor], target_keys: Sequence[str]) -> _Mapping:
    # Group the source keys by feature unit (N or N.M), then by layer J inside a block.
    units: Dict[Tuple[int, ...], Dict[Any, Dict[str, torch.Tensor]]] = {}
    linears: Dict[int, Dict[str, torch.Tensor]] = {}
    unmatched = []
    for key, value in state_dict.items():
        m = _TV_FEATURE.match(key)
        c = _TV_CLASSIFIER.match(key)
        if m and m[3] is not None:
            unit = (int(m[1]),) if m[2] is None else (int(m[1]), int(m[2]))
            units.setdefault(unit, {}).setdefault(int(m[3]), {})[m[4]] = value
        elif m:
            units.setdefault((int(m[5]),), {}).setdefault(None, {})[f'{m[6]}.{m[7]}'] = value
        elif c:
            linears.setdefault(int(c[1]), {})[c[2]] = value
        else:
            unmatched.append(key)

    target_units, target_linears = _timm_units(target_keys)
    if len(units) != len(target_units) or len(linears) != len(target_linears):
        raise ConversionError(
            f'the torchvision checkpoint has {len(units)} feature units and {len(linears)} classifier Linear '
            f'layers, the se_zoo model {len(target_units)} and {len(target_linears)}: a different architecture')

    mapped = {}
    for (source_unit, layers), (prefix, convs) in zip(sorted(units.items()), target_units):
        source_name = 'features.' + '.'.join(map(str, source_unit))
        if None in layers:  # a ConvNormActivation of its own (stem, last conv)
            conv_layers, se_layers = [(source_name, layers[None])], []
        else:  # a block: ConvNormActivations and at most one SqueezeExcitation, in forward order
            conv_layers = [(f'{source_name}.block.{j}', layers[j])
                           for j in sorted(layers) if 'fc1.weight' not in layers[j]]
            se_layers = [layers[j] for j in sorted(layers) if 'fc1.weight' in layers[j]]
        if len(conv_layers) != len(convs) or len(se_layers) > 1:
            raise ConversionError(
                f'{source_name} has {len(conv_layers)} conv/norm layers and {len(se_layers)} SE layers; '
                f'its se_zoo counterpart {prefix or "stem/head"} has {len(convs)} conv/norm layers: '
                f'a different architecture')
        for (source_layer, params), (conv, norm) in zip(conv_layers, convs):
            for name, value in params.items():
                index, _, param = name.partition('.')
                module = {'0': conv, '1': norm}.get(index)  # ConvNormActivation: conv, norm, activation
                if module is None:
                    unmatched.append(f'{source_layer}.{name}')
                else:
                    mapped[f'{prefix}{module}.{param}'] = value
        for params in se_layers:
            mapped.update({f'{prefix}se.{name}': value for name, value in params.items()})
    for (_, params), name in zip(sorted(linears.items()), target_linears):
        for param, value in params.items():
            is_conv = name == 'conv_head' and param == 'weight'
            mapped[f'{name}.{param}'] = _linear_as_conv(value) if is_conv else value
    return mapped, unmatched


_MAPPERS: Dict[str, Callable[..., _Mapping]] = {
    'timm': _map_timm, 'torchvision': _map_torchvision, 'senet': _map_senet, 'legacy': _map_legacy,
}


def rename_keys(state_dict: Dict[str, torch.Tensor], layout: str, target_keys: Sequence[str]) -> _Mapping:
    """A ``layout`` state dict under se_zoo's key names, and the source keys that have no se_zoo counterpart."""
    if layout not in _MAPPERS:
        raise InvalidArgumentError(f'source format {layout!r} is not supported; allowed values are {", ".join(LAYOUTS)}')
    return _MAPPERS[layout](state_dict, list(target_keys))


def map_state_dict(
        state_dict: Dict[str, torch.Tensor],
        layout: str,
        target_state_dict: Dict[str, torch.Tensor],
) -> Dict[str, torch.Tensor]:
    """Map a ``layout`` state_dict onto ``target_state_dict``'s keys and shapes, completely or not at all.

    Raises:
        ConversionError: listing source keys with no counterpart, se_zoo keys left unfilled and shape mismatches.
    """
    mapped, unmatched = rename_keys(state_dict, layout, list(target_state_dict))
    unmatched += [k for k in mapped if k not in target_state_dict]
    missing = [k for k in target_state_dict if k not in mapped]
    mismatched = [f'{k}: checkpoint {tuple(v.shape)}, se_zoo {tuple(target_state_dict[k].shape)}'
                  for k, v in mapped.items() if k in target_state_dict and v.shape != target_state_dict[k].shape]
    if unmatched or missing or mismatched:
        raise ConversionError('the checkpoint does not map completely onto the se_zoo model:\n' + '\n'.join(
            format_key_report(title, items) for title, items in (
                ('unmatched checkpoint keys', unmatched), ('missing se_zoo keys', missing),
                ('shape mismatches', mismatched)) if items))
    return {k: mapped[k] for k in target_state_dict}


def format_key_report(title: str, items: List[str], limit: int = 10) -> str:
    shown = ''.join(f'\n    {item}' for item in items[:limit])
    more = f'\n    ... and {len(items) - limit} more' if len(items) > limit else ''
    return f'  {len(items)} {title}:{shown}{more}'


def rename_state_dict(state_dict: Dict[str, torch.Tensor], layout: str,
                      target_keys: Sequence[str]) -> Dict[str, torch.Tensor]:
    """A ``layout`` state dict under se_zoo's key names, without checking that it fills the target.

    The lenient half of ``map_state_dict``, for a loader that checks completeness itself (timm's strict load).
    """
    mapped, unmatched = rename_keys(state_dict, layout, target_keys)
    if unmatched:
        raise ConversionError('checkpoint keys with no se_zoo counterpart:\n' + format_key_report('unmatched keys', unmatched))
    return mapped


# Where the factor that cancels a retrofitted SE's initial gate goes, by block layout (keys inside the block):
# before the SE when only a norm sits between SE and the residual add (ResNet: a BN without activation), after
# it when the next layer is a bias-free linear conv (MBConv: conv_pw / conv_pwl), since a ReLU6 in between
# would not commute with a scale.
_RETROFIT_COMPENSATION = (
    ('conv3.weight', ('bn3.weight', 'bn3.bias')),  # ResNet bottleneck: SE after bn3
    ('conv_pwl.weight', ('conv_pwl.weight',)),    # inverted residual: SE after the depthwise conv
    ('conv_pw.weight', ('conv_pw.weight',)),      # depthwise-separable: SE between conv_dw and conv_pw
    ('conv2.weight', ('bn2.weight', 'bn2.bias')),  # ResNet basic block: SE after bn2
)


# How many SE gates each tensor must undo: ``key -> exponent`` of the factor ``1 / gate(0)``, an int or an
# integer tensor that broadcasts against the tensor (per input channel, for a conv reading halved channels).
Compensation = Mapping[str, Union[int, torch.Tensor]]


def _table_compensation(se_prefixes: Sequence[str], target_keys: Sequence[str]) -> Dict[str, int]:
    """One factor per SE, on the layer ``_RETROFIT_COMPENSATION`` names for the SE's block."""
    target_keys = set(target_keys)
    plan = {}
    for se in se_prefixes:
        block = se[:-len('se.')]
        compensated = next((keys for marker, keys in _RETROFIT_COMPENSATION if block + marker in target_keys), None)
        if compensated is None:
            raise ConversionError(f'{block[:-1]}: no layer next to its SE to carry the identity initialisation')
        plan.update({block + key: 1 for key in compensated})
    return plan


def _scaled(value: torch.Tensor, factor: float, exponent: Union[int, torch.Tensor]) -> torch.Tensor:
    if isinstance(exponent, int):
        return value * factor ** exponent
    # integer powers of a power of two are exact in floating point, so the scaled tensor is exact too
    scale = torch.pow(torch.tensor(factor, dtype=value.dtype), exponent.to(value.dtype))
    return value * scale.to(value.device)


def retrofit_state_dict(
        state_dict: Dict[str, torch.Tensor],
        target_state_dict: Dict[str, torch.Tensor],
        gate_at_zero: float = 0.5,
        compensation: Optional[Compensation] = None,
) -> Dict[str, torch.Tensor]:
    """A state dict without SE made into one for its SE counterpart, with every SE an exact identity at first.

    Each SE's ``fc2`` is zero, so its gate is ``gate(0)`` for every input (0.5 for sigmoid and hard-sigmoid);
    tensors next to it are scaled by ``1 / gate(0)`` to cancel it. With a power-of-two gate the scaling is exact,
    so the network computes the source's function bit for bit, and its SE learns from the first step (as
    ``se_zoo.add_se`` does for a model in memory). ``fc1`` keeps the target's fresh initialisation from
    ``target_state_dict``.

    Args:
        state_dict: the source network's state dict, without SE.
        target_state_dict: the SE network's (fresh) state dict.
        gate_at_zero: the SE gate's output for a zero excitation.
        compensation: ``key -> exponent``: scale ``key`` by ``(1 / gate_at_zero) ** exponent`` (an int, or an
            integer tensor broadcasting against the tensor). By default one factor on the adjacent layer that
            ``_RETROFIT_COMPENSATION`` names for each SE's block (ResNet, MBConv); a network whose SE placement
            needs more supplies its own (SE-Inception: the next module's convs, ``retrofit_compensation()``).
    """
    factor = 1. / gate_at_zero
    out = dict(state_dict)
    se_prefixes = sorted(k[:-len('fc1.weight')] for k in target_state_dict if k.endswith('se.fc1.weight'))
    for se in se_prefixes:
        if any(k.startswith(se) for k in state_dict):
            raise ConversionError(f'{se[:-1]} already exists in the checkpoint: retrofit adds SE to a network without')
        for key in (k for k in target_state_dict if k.startswith(se)):
            fresh = target_state_dict[key]
            out[key] = torch.zeros_like(fresh) if key.startswith(se + 'fc2.') else fresh.clone()
    if compensation is None:
        compensation = _table_compensation(se_prefixes, list(target_state_dict))
    for key, exponent in compensation.items():
        if key not in state_dict:
            raise ConversionError(f'{key}: the checkpoint has no such tensor to carry an SE identity factor')
        out[key] = _scaled(state_dict[key], factor, exponent)
    return out


def pretrained_filter(mapping: str) -> Callable[[Dict[str, torch.Tensor], nn.Module], Dict[str, torch.Tensor]]:
    """A timm ``pretrained_filter_fn`` that applies ``mapping`` (a layout, or ``'retrofit'``) at load time.

    timm calls it with the downloaded state dict and the freshly built model, then adapts the classifier and
    loads strictly, so a key this mapping misses still fails the load.
    """
    if mapping == 'retrofit':
        def retrofit(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
            gates = [m.gate for n, m in model.named_modules() if n.endswith('.se') and hasattr(m, 'gate')]
            gate_at_zero = float(gates[0](torch.zeros(1))) if gates else 0.5
            # a network whose SE needs more than the adjacent layer scaled says where its factors go
            plan = getattr(model, 'retrofit_compensation', None)
            return retrofit_state_dict(
                state_dict, model.state_dict(), gate_at_zero, plan() if callable(plan) else None)
        return retrofit
    if mapping not in _MAPPERS:
        raise InvalidArgumentError(f'mapping {mapping!r} is not one of {", ".join(("retrofit",) + LAYOUTS)}')

    def rename(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
        return rename_state_dict(state_dict, mapping, list(model.state_dict()))
    return rename
