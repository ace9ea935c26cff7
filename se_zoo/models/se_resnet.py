"""SE-ResNet, SE-ResNeXt, SENet-154 and ResNet-RS (Hu et al., arXiv:1709.01507) on timm's ResNet.

The network, stem, stages, heads and feature API are timm's ``ResNet``; se_zoo contributes the residual
blocks, which carry one ``SqueezeExcite`` at a selectable placement. Layout is ResNet-B (stride on the
3x3 conv), and with the default keywords the state_dict is key-for-key that of timm's ``seresnet*`` /
``seresnext*`` / ``senet154`` / ``resnetrs*``, so their weights load as they are.

timm's stem and downsampling variants are timm's own constructor keywords, taken as they are: ``stem_type``
('deep', 'deep_tiered') and ``stem_width`` (ResNet-C/D/T stems), ``avg_down`` (ResNet-D shortcut),
``replace_stem_pool`` (ResNet-RS), ``block_reduce_first`` and ``down_kernel_size`` (SENet-154), ``aa_layer``
(the ``se_resnextaa*`` entrypoints, whose anti-aliasing layer class is not a JSON value).

SE keywords accepted by every entrypoint (the paper's ablation space):
    r: reduction ratio (default 16; 4 for ResNet-RS); rd_divisor: round the reduced width to a multiple of
    this (8); squeeze: 'avg' | 'max' | 'avgmax'; gate: 'sigmoid' | 'hard_sigmoid' | 'tanh' | 'relu';
    se_act: inner activation ('relu'); se_bias: FC bias (True);
    placement: 'standard' | 'pre' | 'post' | 'identity' (paper Fig. 5);
    se_stages: which of the four stages (1..4, timm's layer1..layer4) carry SE (all).

Original-release layout keywords. The paper's own Caffe models (timm's ``legacy_seresnet*``,
``legacy_seresnext*`` and ``legacy_senet154`` weights, converted by Cadene's pretrainedmodels) differ from
timm's ResNet in three places that change the function, not the parameters. Each is a keyword that defaults
to today's behaviour, so that those weights load into the same architectures (state-dict mapping ``legacy``):
    stem_pool_ceil: the stem max-pool runs without padding and with ``ceil_mode`` (Caffe's pooling
        arithmetic) instead of timm's padding of 1; the output size is the same at even sizes, the values are not;
    stride_in_1x1: a bottleneck strides in its first 1x1 conv (Caffe's ResNet-A placement, the original
        SE-ResNet-50/101/152) rather than in its 3x3 conv; the original SE-ResNeXt and SENet-154 blocks stride
        in the 3x3 conv, as timm does;
    act_before_se: a basic block applies its ReLU to the residual branch before the SE as well as after the
        add (the original SE-ResNet-18/34).
The original SE width is ``C // 16`` without rounding: ``rd_divisor=1`` gives it (every SE-ResNet width is a
multiple of 16, so nothing rounds), and only the 64-channel basic blocks differ from the default of 8. The rest
of the original networks is timm's: SENet-154's 64-64-128 stem is ``stem_type='deep'``, its 3x3 downsampling
convs ``down_kernel_size=3``, its half-width first 1x1 conv ``block_reduce_first=2``. timm's class for them
trains with dropout 0.2 before the classifier; that does not change evaluation, so ``drop_rate`` stays the
caller's choice (timm's ResNet default, 0).
"""
from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import get_act_layer
from timm.models import build_model_with_cfg, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..errors import InvalidArgumentError
from ..squeeze_excite import SqueezeExcite, pop_se_kwargs, se_layer_from_kwargs
from ._pretrained import base_cfg, family_default_cfgs, verified_pretrained

__all__ = ['SEResNet', 'SEBasicBlock', 'SEBottleneck', 'PLACEMENTS']

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
            act_before_se: bool = False,
            device=None,
            dtype=None,
            **kwargs: Any,
    ) -> None:
        super().__init__(inplanes, planes, *args, device=device, dtype=dtype, **kwargs)
        self._init_se(inplanes, planes * self.expansion, se_layer, placement, {'device': device, 'dtype': dtype})
        # the original SE-ResNet-18/34 end their residual branch in a ReLU, before the SE (module docstring)
        self.act_se = get_act_layer(kwargs.get('act_layer', nn.ReLU))(inplace=True) if act_before_se else None

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)
        x = self.conv2(x)
        x = self.bn2(x)
        if self.act_se is not None:
            x = self.act_se(x)
        return x

    def _gated_residual(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The residual branch and its SE gate (standard placement)."""
        x = self._residual(x)
        assert self.se is not None
        return x, self.se.excite(x)

    def _output_act(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(x)


class SEBottleneck(_SEResidualMixin, Bottleneck):
    """timm's ``Bottleneck`` with a ``SqueezeExcite`` at a selectable placement.

    ``stride_in_1x1`` moves the block's stride from the 3x3 conv to the first 1x1 conv (module docstring).
    """

    def __init__(
            self,
            inplanes: int,
            planes: int,
            stride: int = 1,
            *args: Any,
            se_layer: Optional[Callable[..., SqueezeExcite]] = None,
            placement: str = 'standard',
            stride_in_1x1: bool = False,
            device=None,
            dtype=None,
            **kwargs: Any,
    ) -> None:
        if stride_in_1x1 and kwargs.get('aa_layer') is not None:
            raise InvalidArgumentError('stride_in_1x1=True cannot be combined with aa_layer: '
                                       'anti-aliasing replaces the stride of the 3x3 conv')
        dd = {'device': device, 'dtype': dtype}
        super().__init__(inplanes, planes, 1 if stride_in_1x1 else stride, *args, **dd, **kwargs)
        if stride_in_1x1 and stride != 1:
            self.conv1 = nn.Conv2d(inplanes, self.conv1.out_channels, kernel_size=1, stride=stride, bias=False, **dd)
        self._init_se(inplanes, planes * self.expansion, se_layer, placement, dd)

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


class SEResNet(ResNet):
    """timm's ``ResNet``, with the stem max-pool of the original Caffe SENets as an option.

    Args:
        stem_pool_ceil: Pool the stem with ``MaxPool2d(3, 2, ceil_mode=True)`` and no padding, as the original
            SE-ResNet/ResNeXt/SENet-154 models do, instead of timm's ``MaxPool2d(3, 2, padding=1)``.
        *args, **kwargs: timm's ``ResNet`` arguments.
    """

    def __init__(self, *args: Any, stem_pool_ceil: bool = False, **kwargs: Any) -> None:
        if stem_pool_ceil and (kwargs.get('replace_stem_pool') or kwargs.get('aa_layer') is not None):
            raise InvalidArgumentError('stem_pool_ceil=True needs the plain stem max-pool; it cannot be combined '
                                       'with replace_stem_pool or aa_layer')
        super().__init__(*args, **kwargs)
        if stem_pool_ceil:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


# Block keywords that the model-level kwargs carry into block_args, and the block class each one belongs to.
_BLOCK_KEYWORDS = {'act_before_se': SEBasicBlock, 'stride_in_1x1': SEBottleneck}


def _create_se_resnet(variant: str, block: Type[nn.Module], pretrained: bool = False, **kwargs: Any) -> SEResNet:
    se_layer = se_layer_from_kwargs(**pop_se_kwargs(kwargs))
    se_stages = _check_stages(kwargs.pop('se_stages', tuple(range(1, NUM_STAGES + 1))))
    block_args = dict(kwargs.pop('block_args', None) or {}, placement=kwargs.pop('placement', 'standard'))
    for name, block_cls in _BLOCK_KEYWORDS.items():
        if name not in kwargs:
            continue
        value = kwargs.pop(name)
        if value and block is not block_cls:
            raise InvalidArgumentError(
                f'{name}={value!r} applies to {block_cls.__name__} networks; {variant} is built of {block.__name__}')
        if value:
            block_args[name] = value
    return build_model_with_cfg(
        SEResNet, variant, pretrained, block=_stage_blocks(block, se_layer, se_stages), block_args=block_args,
        **kwargs)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return base_cfg(**dict({'first_conv': 'conv1', 'classifier': 'fc'}, **kwargs))


def _dcfg(**kwargs: Any) -> Dict[str, Any]:
    """A deep (3x3 conv) stem: timm names its first conv ``conv1.0``."""
    return _cfg(first_conv='conv1.0', **kwargs)


# Preprocessing of each architecture's first timm checkpoint (the tags override it with their own).
_BICUBIC = dict(interpolation='bicubic')
_TEST_288 = dict(interpolation='bicubic', test_input_size=(3, 288, 288))

default_cfgs = family_default_cfgs({
    'se_resnet18': _cfg(),
    'se_resnet34': _cfg(),
    'se_resnet50': _cfg(),
    'se_resnet101': _cfg(),
    'se_resnet152': _cfg(),
    'se_resnet152d': _dcfg(
        input_size=(3, 256, 256), pool_size=(8, 8), crop_pct=0.95, interpolation='bicubic',
        test_input_size=(3, 320, 320), test_crop_pct=1.0),
    'se_resnext26_32x4d': _cfg(**_BICUBIC),
    'se_resnext26d_32x4d': _dcfg(**_TEST_288, test_crop_pct=0.95),
    'se_resnext26t_32x4d': _dcfg(**_TEST_288, test_crop_pct=0.95),
    'se_resnext50_32x4d': _cfg(),
    'se_resnext101_32x4d': _cfg(),
    'se_resnext101_32x8d': _cfg(**_TEST_288, crop_pct=0.95, test_crop_pct=1.0),
    'se_resnext101_64x4d': _cfg(**_BICUBIC),
    'se_resnext101d_32x8d': _dcfg(**_TEST_288, crop_pct=0.95, test_crop_pct=1.0),
    'se_resnextaa101d_32x8d': _dcfg(**_TEST_288, crop_pct=0.95, test_crop_pct=1.0),
    'se_resnextaa201d_32x8d': _dcfg(
        input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0, interpolation='bicubic'),
    'se_senet154': _dcfg(**_BICUBIC),
    'se_resnetrs50': _dcfg(
        input_size=(3, 160, 160), pool_size=(5, 5), crop_pct=0.91, interpolation='bicubic',
        test_input_size=(3, 224, 224)),
    'se_resnetrs101': _dcfg(
        input_size=(3, 192, 192), pool_size=(6, 6), crop_pct=0.94, interpolation='bicubic',
        test_input_size=(3, 288, 288)),
    'se_resnetrs152': _dcfg(
        input_size=(3, 256, 256), pool_size=(8, 8), crop_pct=1.0, interpolation='bicubic',
        test_input_size=(3, 320, 320)),
    'se_resnetrs200': _dcfg(
        input_size=(3, 256, 256), pool_size=(8, 8), crop_pct=1.0, interpolation='bicubic',
        test_input_size=(3, 320, 320)),
    'se_resnetrs270': _dcfg(
        input_size=(3, 256, 256), pool_size=(8, 8), crop_pct=1.0, interpolation='bicubic',
        test_input_size=(3, 352, 352)),
    'se_resnetrs350': _dcfg(
        input_size=(3, 288, 288), pool_size=(9, 9), crop_pct=1.0, interpolation='bicubic',
        test_input_size=(3, 384, 384)),
    'se_resnetrs420': _dcfg(
        input_size=(3, 320, 320), pool_size=(10, 10), crop_pct=1.0, interpolation='bicubic',
        test_input_size=(3, 416, 416)),
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


@register_model
@verified_pretrained
def se_resnet152d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-152-D: bottleneck blocks (3, 8, 36, 3) with SE, deep 32-32-64 stem, average-pool shortcut."""
    model_args = dict(layers=(3, 8, 36, 3), stem_width=32, stem_type='deep', avg_down=True)
    return _create_se_resnet('se_resnet152d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnext26_32x4d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-26 32x4d: grouped bottlenecks (2, 2, 2, 2), cardinality 32, base width 4, with SE."""
    model_args = dict(layers=(2, 2, 2, 2), cardinality=32, base_width=4)
    return _create_se_resnet('se_resnext26_32x4d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnext26d_32x4d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-26-D 32x4d: grouped bottlenecks (2, 2, 2, 2) with SE, deep 32-32-64 stem, average-pool shortcut."""
    model_args = dict(
        layers=(2, 2, 2, 2), cardinality=32, base_width=4, stem_width=32, stem_type='deep', avg_down=True)
    return _create_se_resnet('se_resnext26d_32x4d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnext26t_32x4d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-26-T 32x4d: grouped bottlenecks (2, 2, 2, 2) with SE, tiered 24-32-64 stem, average-pool shortcut."""
    model_args = dict(
        layers=(2, 2, 2, 2), cardinality=32, base_width=4, stem_width=32, stem_type='deep_tiered', avg_down=True)
    return _create_se_resnet('se_resnext26t_32x4d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnext101_32x8d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-101 32x8d: grouped bottlenecks (3, 4, 23, 3), cardinality 32, base width 8, with SE."""
    model_args = dict(layers=(3, 4, 23, 3), cardinality=32, base_width=8)
    return _create_se_resnet('se_resnext101_32x8d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnext101_64x4d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-101 64x4d: grouped bottlenecks (3, 4, 23, 3), cardinality 64, base width 4, with SE."""
    model_args = dict(layers=(3, 4, 23, 3), cardinality=64, base_width=4)
    return _create_se_resnet('se_resnext101_64x4d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnext101d_32x8d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-101-D 32x8d: grouped bottlenecks (3, 4, 23, 3) with SE, deep 32-32-64 stem, average-pool shortcut."""
    model_args = dict(
        layers=(3, 4, 23, 3), cardinality=32, base_width=8, stem_width=32, stem_type='deep', avg_down=True)
    return _create_se_resnet('se_resnext101d_32x8d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnextaa101d_32x8d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-101-D 32x8d with average-pool anti-aliasing (stem and strided 3x3 convs), as timm's
    ``seresnextaa101d_32x8d``."""
    model_args = dict(
        layers=(3, 4, 23, 3), cardinality=32, base_width=8, stem_width=32, stem_type='deep', avg_down=True,
        aa_layer=nn.AvgPool2d)
    return _create_se_resnet('se_resnextaa101d_32x8d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnextaa201d_32x8d(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-201-D 32x8d: grouped bottlenecks (3, 24, 36, 4) with SE, deep 64-64-128 stem, average-pool
    shortcut and anti-aliasing, as timm's ``seresnextaa201d_32x8d``."""
    model_args = dict(
        layers=(3, 24, 36, 4), cardinality=32, base_width=8, stem_width=64, stem_type='deep', avg_down=True,
        aa_layer=nn.AvgPool2d)
    return _create_se_resnet('se_resnextaa201d_32x8d', SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_senet154(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SENet-154: grouped bottlenecks (3, 8, 36, 3), cardinality 64, with SE; deep 64-64-128 stem, first 1x1
    conv of each block at half width, 3x3 downsampling convs (timm's ``senet154``, the paper's ILSVRC 2017 entry)."""
    model_args = dict(
        layers=(3, 8, 36, 3), cardinality=64, base_width=4, stem_type='deep', down_kernel_size=3,
        block_reduce_first=2)
    return _create_se_resnet('se_senet154', SEBottleneck, pretrained, **dict(model_args, **kwargs))


def _create_se_resnetrs(variant: str, pretrained: bool = False, **kwargs: Any) -> SEResNet:
    # ResNet-RS (Bello et al., arXiv:2103.07579): ResNet-D with a strided conv for the stem pool and SE at r=4
    model_args = dict(stem_width=32, stem_type='deep', replace_stem_pool=True, avg_down=True, r=4)
    return _create_se_resnet(variant, SEBottleneck, pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnetrs50(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-RS-50: bottleneck blocks (3, 4, 6, 3), SE at r=4, deep stem with a strided conv for its pool."""
    model_args = dict(layers=(3, 4, 6, 3))
    return _create_se_resnetrs('se_resnetrs50', pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnetrs101(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-RS-101: bottleneck blocks (3, 4, 23, 3), SE at r=4, deep stem with a strided conv for its pool."""
    model_args = dict(layers=(3, 4, 23, 3))
    return _create_se_resnetrs('se_resnetrs101', pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnetrs152(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-RS-152: bottleneck blocks (3, 8, 36, 3), SE at r=4, deep stem with a strided conv for its pool."""
    model_args = dict(layers=(3, 8, 36, 3))
    return _create_se_resnetrs('se_resnetrs152', pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnetrs200(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-RS-200: bottleneck blocks (3, 24, 36, 3), SE at r=4, deep stem with a strided conv for its pool."""
    model_args = dict(layers=(3, 24, 36, 3))
    return _create_se_resnetrs('se_resnetrs200', pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnetrs270(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-RS-270: bottleneck blocks (4, 29, 53, 4), SE at r=4, deep stem with a strided conv for its pool."""
    model_args = dict(layers=(4, 29, 53, 4))
    return _create_se_resnetrs('se_resnetrs270', pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnetrs350(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-RS-350: bottleneck blocks (4, 36, 72, 4), SE at r=4, deep stem with a strided conv for its pool."""
    model_args = dict(layers=(4, 36, 72, 4))
    return _create_se_resnetrs('se_resnetrs350', pretrained, **dict(model_args, **kwargs))


@register_model
@verified_pretrained
def se_resnetrs420(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-RS-420: bottleneck blocks (4, 44, 87, 4), SE at r=4, deep stem with a strided conv for its pool."""
    model_args = dict(layers=(4, 44, 87, 4))
    return _create_se_resnetrs('se_resnetrs420', pretrained, **dict(model_args, **kwargs))
