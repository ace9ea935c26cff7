"""SE-ResNet and SE-ResNeXt (Hu et al., arXiv:1709.01507) on timm's ResNet.

The network, stem, stages, heads and feature API are timm's ``ResNet``; se_zoo contributes the residual
blocks, which carry one ``SqueezeExcite`` at a selectable placement. Layout is ResNet-B (stride on the
3x3 conv), and with the default keywords the state_dict is key-for-key that of timm's ``seresnet*`` /
``seresnext*``, so their weights load as they are.

SE keywords accepted by every entrypoint (the paper's ablation space):
    r: reduction ratio (default 16); rd_divisor: round the reduced width to a multiple of this (8);
    squeeze: 'avg' | 'max' | 'avgmax'; gate: 'sigmoid' | 'hard_sigmoid' | 'tanh' | 'relu';
    se_act: inner activation ('relu'); se_bias: FC bias (True);
    placement: 'standard' | 'pre' | 'post' | 'identity' (paper Fig. 5);
    se_stages: which of the four stages (1..4, timm's layer1..layer4) carry SE (all).
"""
from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..errors import InvalidArgumentError
from ..squeeze_excite import SqueezeExcite, pop_se_kwargs, se_layer_from_kwargs
from ._pretrained import base_cfg, family_default_cfgs, verified_pretrained

__all__ = ['SEBasicBlock', 'SEBottleneck', 'PLACEMENTS']

PLACEMENTS = ('standard', 'pre', 'post', 'identity')
NUM_STAGES = 4


class _SEResidualMixin:
    """SE placement around a timm residual block, shared by the basic and bottleneck variants.

    standard: SE on the residual branch, after its last BN, before the add (the paper's default);
    pre: SE on the block input, feeding the residual branch only; post: SE after the add, before the
    final activation; identity: SE on the shortcut, in parallel with the residual branch.

    ``reparameterize()`` (which ``timm.utils.reparameterize_model`` and ``se_zoo.optimize_for_inference`` call)
    switches the standard and identity placements to the fused path. It computes the reference function
    (``x * gate``, then ``+ shortcut``) in fewer passes:

    - in eval mode, a bottleneck with an average squeeze pools the *input* of its final 1x1 conv, 4x narrower,
      and applies that conv and the frozen BN to the pooled vector (a spatial mean commutes with both);
    - at inference (eval mode, autograd off) the gate multiply shares its pass with the residual add,
      ``addcmul(shortcut, x, gate)``, written into the branch output as timm's ``x += shortcut`` is.
    With autograd on, the epilogue keeps the reference's rounding (multiply, then an in-place add).

    It is off until asked for: both rewrites reorder floating-point sums (a mean before rather than after conv3;
    a fused multiply-add), so eval logits move by about 1e-6 of their scale, and a model loaded from timm's
    weights must give timm's logits bit for bit unless the user opts in.
    """

    def _init_se(self, inplanes: int, outplanes: int, se_layer: Optional[Callable[..., SqueezeExcite]],
                 placement: str, dd: Dict[str, Any]) -> None:
        if placement not in PLACEMENTS:
            raise InvalidArgumentError(f'placement={placement!r} is not supported; allowed values are {", ".join(PLACEMENTS)}')
        self.placement = placement
        self.se = se_layer(inplanes if placement == 'pre' else outplanes, **dd) if se_layer is not None else None
        # The placement, resolved once into where the SE sits (no string comparison per forward).
        has_se = self.se is not None
        self.se_on_input = has_se and placement == 'pre'
        self.se_on_branch = has_se and placement == 'standard'
        self.se_on_shortcut = has_se and placement == 'identity'
        self.se_on_output = has_se and placement == 'post'
        self.fused_se = False

    def reparameterize(self) -> None:
        """Switch to the fused inference path (see the class docstring); a no-op for the pre and post placements."""
        self.fused_se = self.se_on_branch or self.se_on_shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_se:
            return self._forward_fused(x)
        shortcut = x
        if self.se is not None and self.se_on_input:
            x = self.se(x)
        x = self._residual(x)
        if self.se is not None and self.se_on_branch:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        shortcut = self._shortcut(shortcut)
        if self.se is not None and self.se_on_shortcut:
            shortcut = self.se(shortcut)
        x += shortcut  # x is a fresh branch output, as in timm: no extra feature-map allocation
        if self.se is not None and self.se_on_output:
            x = self.se(x)
        return self._output_act(x)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # computed after the residual branch, as timm does: the downsampled map is not held while the branch runs
        return x if self.downsample is None else self.downsample(x)

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        assert self.se is not None
        # x is a fresh branch output at inference (DropPath is the identity in eval), so it can take the result
        fuse_epilogue = not self.training and not torch.is_grad_enabled()
        if not torch.jit.is_scripting():
            # an FX trace cannot branch on its proxies' dtypes; it records the plain epilogue
            fuse_epilogue = fuse_epilogue and not _is_fx_symbolic_tracing()
        shortcut = x
        if self.se_on_branch:
            x, gate = self._gated_residual(x)
            shortcut = self._shortcut(shortcut)
            if fuse_epilogue and _can_write_into(x, shortcut, gate):
                return self._output_act(torch.addcmul(shortcut, x, gate, out=x))
            x = x * gate
            if self.drop_path is not None:
                x = self.drop_path(x)
            return self._output_act(x.add_(shortcut))
        # identity: the gate scales the shortcut, in parallel with the residual branch
        x = self._residual(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        shortcut = self._shortcut(shortcut)
        gate = self.se.excite(shortcut)
        if fuse_epilogue and _can_write_into(x, shortcut, gate):
            return self._output_act(torch.addcmul(x, shortcut, gate, out=x))
        return self._output_act((shortcut * gate).add_(x))


# torch.fx's is_fx_tracing() is also true under torch.export and warns so; newer torch names the FX-only check
_is_fx_symbolic_tracing = getattr(
    torch.fx._symbolic_trace, 'is_fx_symbolic_tracing', torch.fx._symbolic_trace.is_fx_tracing)


def _can_write_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    # under autocast the operands can differ in dtype, and the promoted result would not fit ``out``
    return a.dtype == out.dtype and b.dtype == out.dtype


class SEBasicBlock(_SEResidualMixin, BasicBlock):
    """timm's ``BasicBlock`` with a ``SqueezeExcite`` at a selectable placement."""

    def __init__(
            self,
            inplanes: int,
            planes: int,
            *args: Any,
            se_layer: Optional[Callable[..., SqueezeExcite]] = None,
            placement: str = 'standard',
            device=None,
            dtype=None,
            **kwargs: Any,
    ) -> None:
        super().__init__(inplanes, planes, *args, device=device, dtype=dtype, **kwargs)
        self._init_se(inplanes, planes * self.expansion, se_layer, placement, {'device': device, 'dtype': dtype})

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)
        x = self.conv2(x)
        return self.bn2(x)

    def _gated_residual(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The residual branch and its SE gate (standard placement)."""
        x = self._residual(x)
        assert self.se is not None
        return x, self.se.excite(x)

    def _output_act(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(x)


class SEBottleneck(_SEResidualMixin, Bottleneck):
    """timm's ``Bottleneck`` with a ``SqueezeExcite`` at a selectable placement."""

    def __init__(
            self,
            inplanes: int,
            planes: int,
            *args: Any,
            se_layer: Optional[Callable[..., SqueezeExcite]] = None,
            placement: str = 'standard',
            device=None,
            dtype=None,
            **kwargs: Any,
    ) -> None:
        super().__init__(inplanes, planes, *args, device=device, dtype=dtype, **kwargs)
        self._init_se(inplanes, planes * self.expansion, se_layer, placement, {'device': device, 'dtype': dtype})

    def _residual_to_conv3(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.drop_block(x)
        x = self.act2(x)
        return self.aa(x)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn3(self.conv3(self._residual_to_conv3(x)))

    def _gated_residual(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The residual branch and its SE gate (standard placement).

        In eval mode the SE descriptor ``mean(bn3(conv3(y)))`` is computed as ``bn3(conv3(mean(y)))``:
        the 1x1 conv and the frozen BN are affine per position, so they commute with the spatial mean,
        and ``y`` has a quarter of the channels.
        """
        y = self._residual_to_conv3(x)
        x = self.bn3(self.conv3(y))
        assert self.se is not None
        if not self.training and self.se.linear_squeeze:
            x_se = self._conv3_bn3_frozen(self.se.squeeze(y))
            if x_se is not None:
                return x, self.se.excite_squeezed(x_se)
        return x, self.se.excite(x)

    def _conv3_bn3_frozen(self, y_se: torch.Tensor) -> Optional[torch.Tensor]:
        """``bn3(conv3(y_se))`` for a squeezed (N, C, 1, 1) input, or None where bn3 is not a frozen affine norm.

        A matrix product (conv3 is 1x1) and the functional norm, so conv3's and bn3's hooks fire once per forward.
        """
        x_se = F.linear(y_se.flatten(1), self.conv3.weight.flatten(1), self.conv3.bias)
        if isinstance(self.bn3, nn.Identity):  # folded into conv3 by optimize_for_inference
            return x_se.view(x_se.shape[0], -1, 1, 1)
        if isinstance(self.bn3, nn.BatchNorm2d) and not self.bn3.training:
            mean, var = self.bn3.running_mean, self.bn3.running_var
            if mean is not None and var is not None:
                x_se = F.batch_norm(x_se, mean, var, self.bn3.weight, self.bn3.bias, False, 0., self.bn3.eps)
                return x_se.view(x_se.shape[0], -1, 1, 1)
        return None

    def _output_act(self, x: torch.Tensor) -> torch.Tensor:
        return self.act3(x)


def _stage_blocks(block_cls: Type[nn.Module], se_layer: Callable[..., SqueezeExcite],
                  se_stages: Sequence[int]) -> Tuple[Callable[..., nn.Module], ...]:
    # timm's ResNet takes one block callable per stage and reads `.expansion` from it.
    blocks = []
    for stage in range(1, NUM_STAGES + 1):
        block = partial(block_cls, se_layer=se_layer if stage in se_stages else None)
        block.expansion = block_cls.expansion
        blocks.append(block)
    return tuple(blocks)


def _check_stages(se_stages: Any) -> Tuple[int, ...]:
    allowed = tuple(range(1, NUM_STAGES + 1))
    if isinstance(se_stages, int) or not all(isinstance(s, int) and s in allowed for s in se_stages):
        raise InvalidArgumentError(f'se_stages={se_stages!r} must be a sequence of stage indices from {allowed} '
                         f'(stage i is timm\'s layer{{i}})')
    return tuple(se_stages)


def _create_se_resnet(variant: str, block: Type[nn.Module], pretrained: bool = False, **kwargs: Any) -> ResNet:
    se_layer = se_layer_from_kwargs(**pop_se_kwargs(kwargs))
    se_stages = _check_stages(kwargs.pop('se_stages', tuple(range(1, NUM_STAGES + 1))))
    block_args = dict(kwargs.pop('block_args', None) or {}, placement=kwargs.pop('placement', 'standard'))
    return build_model_with_cfg(
        ResNet, variant, pretrained, block=_stage_blocks(block, se_layer, se_stages), block_args=block_args, **kwargs)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return base_cfg(first_conv='conv1', classifier='fc', **kwargs)


default_cfgs = family_default_cfgs({
    'se_resnet18': _cfg(),
    'se_resnet34': _cfg(),
    'se_resnet50': _cfg(),
    'se_resnet101': _cfg(),
    'se_resnet152': _cfg(),
    'se_resnext50_32x4d': _cfg(),
    'se_resnext101_32x4d': _cfg(),
})


@register_model
@verified_pretrained
def se_resnet18(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-18: basic blocks (2, 2, 2, 2) with SE."""
    model_args = dict(layers=(2, 2, 2, 2))
    return _create_se_resnet('se_resnet18', SEBasicBlock, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnet34(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-34: basic blocks (3, 4, 6, 3) with SE."""
    model_args = dict(layers=(3, 4, 6, 3))
    return _create_se_resnet('se_resnet34', SEBasicBlock, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnet50(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-50: bottleneck blocks (3, 4, 6, 3) with SE, the paper's headline model."""
    model_args = dict(layers=(3, 4, 6, 3))
    return _create_se_resnet('se_resnet50', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnet101(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-101: bottleneck blocks (3, 4, 23, 3) with SE."""
    model_args = dict(layers=(3, 4, 23, 3))
    return _create_se_resnet('se_resnet101', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnet152(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-152: bottleneck blocks (3, 8, 36, 3) with SE."""
    model_args = dict(layers=(3, 8, 36, 3))
    return _create_se_resnet('se_resnet152', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnext50_32x4d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-50 32x4d: grouped bottlenecks (3, 4, 6, 3), cardinality 32, base width 4, with SE."""
    model_args = dict(layers=(3, 4, 6, 3), cardinality=32, base_width=4)
    return _create_se_resnet('se_resnext50_32x4d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnext101_32x4d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-101 32x4d: grouped bottlenecks (3, 4, 23, 3), cardinality 32, base width 4, with SE."""
    model_args = dict(layers=(3, 4, 23, 3), cardinality=32, base_width=4)
    return _create_se_resnet('se_resnext101_32x4d', SEBottleneck, pretrained, **dict(model_args, **kwargs))
