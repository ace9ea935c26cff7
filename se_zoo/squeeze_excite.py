"""The one Squeeze-and-Excitation layer that every se_zoo family uses.

Hu et al., "Squeeze-and-Excitation Networks" (arXiv:1709.01507): squeeze each channel to one number,
excite with a small bottleneck MLP, and rescale the channels with the resulting gate.
"""
from functools import partial
from typing import Any, Callable, Dict, Optional, Type, Union

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d, create_act_layer, make_divisible

from .errors import InvalidArgumentError, check_positive_int

__all__ = ['SqueezeExcite', 'se_layer_from_kwargs', 'pop_se_kwargs', 'SE_KWARGS', 'SQUEEZE_TYPES', 'GATE_TYPES', 'ACT_TYPES']

SQUEEZE_TYPES = ('avg', 'max', 'avgmax')
GATE_TYPES = ('sigmoid', 'hard_sigmoid', 'tanh', 'relu')
ACT_TYPES = ('relu', 'relu6', 'silu', 'swish', 'hard_swish', 'gelu', 'leaky_relu', 'mish')

LayerSpec = Union[str, Type[nn.Module]]

# The SE keywords every se_zoo entrypoint accepts (see se_layer_from_kwargs).
SE_KWARGS = ('r', 'rd_divisor', 'squeeze', 'gate', 'se_act', 'se_bias')


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidArgumentError(f'{name}={value!r} is not supported; allowed values are {", ".join(allowed)}')


def _check_layer(name: str, value: LayerSpec, allowed: tuple) -> None:
    if isinstance(value, type) and issubclass(value, nn.Module):
        return
    _check_choice(name, value, allowed)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation: ``x * gate(fc2(act(fc1(squeeze(x)))))``.

    Args:
        channels: Channels of the feature map being reweighted.
        rd_ratio: Reduced width as a fraction of ``channels`` (the paper's 1/r).
        rd_channels: Explicit reduced width; overrides ``rd_ratio``.
        rd_divisor: Round the reduced width to a multiple of this (1: round to the nearest integer).
        round_limit: Round up by one more ``rd_divisor`` when rounding lost more than this fraction
            (timm's ``make_divisible``; MobileNetV3 uses 0.9).
        squeeze: Squeeze operator, one of ``SQUEEZE_TYPES``.
        gate: Excitation gate, one of ``GATE_TYPES`` (``'relu'`` is the paper's ablation).
        act_layer: Activation between the two FC layers: a name from ``ACT_TYPES`` or an nn.Module class.
        bias: Whether the FC layers have a bias.

    The FC layers are 1x1 convolutions so that the layer works on NCHW and channels_last input alike.
    """

    def __init__(
            self,
            channels: int,
            rd_ratio: float = 1. / 16,
            rd_channels: Optional[int] = None,
            rd_divisor: int = 8,
            round_limit: float = 0.,
            squeeze: str = 'avg',
            gate: LayerSpec = 'sigmoid',
            act_layer: LayerSpec = 'relu',
            bias: bool = True,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        _check_choice('squeeze', squeeze, SQUEEZE_TYPES)
        _check_layer('gate', gate, GATE_TYPES)
        _check_layer('act_layer', act_layer, ACT_TYPES)
        check_positive_int('channels', channels)
        if rd_channels is None:
            if not rd_ratio > 0:
                raise InvalidArgumentError(f'rd_ratio={rd_ratio!r} must be > 0 (the reduction ratio r must be positive)')
            check_positive_int('rd_divisor', rd_divisor)
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=round_limit)
        check_positive_int('rd_channels', rd_channels)
        dd = {'device': device, 'dtype': dtype}
        self.squeeze = SelectAdaptivePool2d(pool_type='fast' + squeeze, flatten=False)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias, **dd)
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias, **dd)
        self.gate = create_act_layer(gate)

    def excite(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate, shape (N, C, 1, 1), for feature map ``x``."""
        if self.linear_squeeze:
            # the same mean the pooling module takes, without its two wrapper calls (measurable at batch 1)
            return self.excite_squeezed(x.mean((2, 3), keepdim=True))
        return self.excite_squeezed(self.squeeze(x))

    def excite_squeezed(self, x_se: torch.Tensor) -> torch.Tensor:
        """The gate for an already squeezed descriptor ``x_se`` of shape (N, C, 1, 1).

        Lets a residual block compute the descriptor more cheaply than by squeezing the full feature map
        (see ``SEBottleneck``); ``gate`` is always applied as a module, so its hooks see every excitation.
        """
        return self.gate(self.fc2(self.act(self.fc1(x_se))))

    @property
    def linear_squeeze(self) -> bool:
        """Whether the squeeze is a plain spatial mean, so that it commutes with 1x1 convs and affine norms."""
        return self.squeeze.pool_type == 'fastavg'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(x)


def se_layer_from_kwargs(
        r: float = 16,
        rd_divisor: int = 8,
        squeeze: str = 'avg',
        gate: LayerSpec = 'sigmoid',
        se_act: Optional[LayerSpec] = None,
        se_bias: bool = True,
        **extra: Any,
) -> Callable[..., SqueezeExcite]:
    """Turn the model-level SE keyword arguments into a ``SqueezeExcite`` factory.

    ``r`` is the paper's reduction ratio (reduced width = channels / r); ``se_act`` is the inner activation
    (``None`` keeps the family's default). The values are checked here, so a bad keyword fails before any
    layer is built, with a message naming the argument.
    """
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0:
        raise InvalidArgumentError(f'r={r!r} must be a positive number (the SE reduction ratio)')
    _check_choice('squeeze', squeeze, SQUEEZE_TYPES)
    _check_layer('gate', gate, GATE_TYPES)
    if se_act is not None:
        _check_layer('se_act', se_act, ACT_TYPES)
        extra['act_layer'] = se_act
    return partial(
        SqueezeExcite, rd_ratio=1. / r, rd_divisor=rd_divisor, squeeze=squeeze, gate=gate, bias=se_bias, **extra)


def pop_se_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Remove the SE keywords (``SE_KWARGS``) from a model's kwargs and return them."""
    return {name: kwargs.pop(name) for name in SE_KWARGS if name in kwargs}
