"""SE-EfficientNet on timm's EfficientNet: V1 B0-B8 and L2 (Tan & Le, arXiv:1905.11946), its pruned, CondConv
and X/H variants, and EfficientNetV2 (Tan & Le, arXiv:2104.00298).

EfficientNet already places SE after the depthwise conv of every MBConv block, reduced to a quarter of
the block's *input* channels, with SiLU inside and a sigmoid gate. se_zoo builds each network with timm's
own generator and swaps in its ``SqueezeExcite`` so that the paper's design space is selectable. With the
default keywords the state_dict loads timm's weights of the same network as they are (``se_zoo.state_dicts``
renames timm's ``conv_reduce``/``conv_expand`` to ``fc1``/``fc2``).

SE keywords: r (reduced width = block input channels / r, default 4), rd_divisor (1: plain rounding),
squeeze, gate ('sigmoid'), se_act (default: the block's activation, SiLU; ReLU in EfficientNet-X/H's
EdgeResidual stages), se_bias.

Beyond B0-B7 the family is extended by the constructor arguments of timm's generators:

- ``se_efficientnet_b8`` / ``_l2``: the compound scaling to width 2.2 / 4.3 and depth 3.6 / 5.3.
- ``se_efficientnet_b1_pruned`` .. ``_b3_pruned``: B1-B3 with every layer at the width of timm's pruned
  checkpoints (arXiv:2002.08258). timm ships those widths under its own SE layer names; se_zoo maps them to its
  SE layer and rebuilds the layers before any weights load. Like timm's, they default to TF padding
  (``pad_type='same'``) and BatchNorm eps (1e-3), which the pruned weights were trained with.
- ``se_efficientnet_cc_*``: CondConv (arXiv:1904.04971), whose last three stages mix ``num_experts`` kernels
  per example; ``experts_multiplier`` (timm's keyword) doubles the 4 experts of ``cc_b0_4e`` to 8.
- ``se_efficientnet_x_b5`` / ``_h_b5``: EfficientNet-X (arXiv:2102.05610), whose stages 2-3 are EdgeResidual
  blocks (one full conv in place of expand + depthwise) that carry SE too; ``version=2`` (H) lowers their
  expansion from 6 to 4, and ``_h_b5`` is 1.92 wide.
- ``se_efficientnetv2_*``: EfficientNetV2, Fused-MBConv (EdgeResidual, no SE) early and SE-MBConv late; the
  ``rw`` networks are timm's own (``rw_s``/``rw_m``: before the reference code, a 272-wide last stage and a
  1792 head; ``rw_t`` the reference layout at 0.8 width, 0.9 depth).

TF-ported weights (``tf_efficientnet*``, ``tf_efficientnetv2_*``) are tags of the same architectures: they
differ only in TF's 'same' padding and BatchNorm eps, which their tags set (``pad_type='same', bn_eps=0.001``).
"""
import json
import re
from typing import Any, Callable, Dict

import torch.nn as nn
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.models import load_pretrained, register_model
from timm.models.efficientnet import EfficientNet

from ..errors import InvalidArgumentError
from ._mbconv_se import mbconv_se_layer, pop_mbconv_se_kwargs
from ._pretrained import base_cfg, family_default_cfgs, verified_pretrained
from ._timm_compat import (
    _gen_efficientnet, _gen_efficientnet_condconv, _gen_efficientnet_x, _gen_efficientnetv2_base,
    _gen_efficientnetv2_l, _gen_efficientnetv2_m, _gen_efficientnetv2_s, _gen_efficientnetv2_xl,
    adapt_model_from_string, pruned_widths)

# TensorFlow's BatchNorm eps, which the pruned checkpoints were trained with.
_BN_EPS_TF = 1e-3
# An SE conv in timm's pruned width specs: (SE module path, reduce | expand, weight | bias).
_TIMM_SE_KEY = re.compile(r'^(.*\.se)\.conv_(reduce|expand)\.(weight|bias)$')

# (channel multiplier, depth multiplier, resolution) from the EfficientNet paper.
_SCALING = {
    'se_efficientnet_b0': (1.0, 1.0, 224),
    'se_efficientnet_b1': (1.0, 1.1, 240),
    'se_efficientnet_b2': (1.1, 1.2, 260),
    'se_efficientnet_b3': (1.2, 1.4, 300),
    'se_efficientnet_b4': (1.4, 1.8, 380),
    'se_efficientnet_b5': (1.6, 2.2, 456),
    'se_efficientnet_b6': (1.8, 2.6, 528),
    'se_efficientnet_b7': (2.0, 3.1, 600),
    'se_efficientnet_b8': (2.2, 3.6, 672),
    'se_efficientnet_l2': (4.3, 5.3, 800),
}


def _create_se_efficientnet(
        variant: str, pretrained: bool = False, generator: Callable[..., EfficientNet] = _gen_efficientnet,
        **kwargs: Any,
) -> EfficientNet:
    """An SE-EfficientNet built by timm's ``generator`` (B-series scaling from ``_SCALING`` by default)."""
    if generator is _gen_efficientnet and variant in _SCALING:
        kwargs['channel_multiplier'], kwargs['depth_multiplier'], _ = _SCALING[variant]
    se_kwargs = dict(dict(rd_divisor=1), **pop_mbconv_se_kwargs(kwargs))
    se_layer = mbconv_se_layer(arch_ratio=0.25, default_r=4, **se_kwargs)
    return generator(variant, pretrained=pretrained, se_layer=se_layer, **kwargs)


def _se_pruned_widths(model: nn.Module, timm_variant: str, built_se_widths: bool) -> str:
    """timm's pruned layer widths for ``model``, under se_zoo's SE names.

    With ``built_se_widths`` the SE hidden widths are left as ``model`` was built (``r`` / ``rd_divisor``
    applied to the unpruned network), not the checkpoint's.
    """
    entries = []
    for entry in pruned_widths(timm_variant).split('***'):
        key, shape = entry.split(':', 1)
        m = _TIMM_SE_KEY.match(key)
        if m:
            # timm's spec names the SE convs conv_reduce/conv_expand; se_zoo's SE layer calls them fc1/fc2.
            fc = 'fc1' if m[2] == 'reduce' else 'fc2'
            if built_se_widths:
                dims = json.loads(shape)
                hidden = model.get_submodule(f'{m[1]}.fc1').out_channels
                if fc == 'fc1':
                    dims[0] = hidden
                elif m[3] == 'weight':
                    dims[1] = hidden
                shape = json.dumps(dims)
            key = f'{m[1]}.{fc}.{m[3]}'
        entries.append(f'{key}:{shape}')
    return '***'.join(entries)


def _create_se_efficientnet_pruned(variant: str, pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """A pruned SE-EfficientNet: built at full width, narrowed to timm's pruned widths, then loaded.

    timm narrows its own pruned networks inside ``build_model_with_cfg``, from a file named after timm's
    variant; se_zoo narrows after building, so it loads the weights itself, as timm would have.
    """
    if 'feature_cls' in kwargs or 'feature_cfg' in kwargs:
        raise InvalidArgumentError(
            f'{variant}: feature_cls / feature_cfg are not supported on a pruned network; use features_only=True '
            'alone (timm\'s EfficientNetFeatures)')
    filter_fn = kwargs.pop('pretrained_filter_fn', None)
    cache_dir = kwargs.pop('cache_dir', None)
    features_only = bool(kwargs.get('features_only', False))
    # The checkpoint's SE hidden widths, unless the caller chose the reduction (then it applies as in B1-B3).
    built_se_widths = kwargs.get('r', 4) != 4 or kwargs.get('rd_divisor', 1) != 1
    kwargs.setdefault('bn_eps', _BN_EPS_TF)
    kwargs.setdefault('pad_type', 'same')
    model = _create_se_efficientnet(variant, pretrained=False, **kwargs)
    model = adapt_model_from_string(model, _se_pruned_widths(model, variant[len('se_'):], built_se_widths))
    if pretrained:
        load_pretrained(
            model, pretrained_cfg=model.pretrained_cfg, num_classes=0 if features_only else model.num_classes,
            in_chans=kwargs.get('in_chans', 3), filter_fn=filter_fn, strict=not features_only, cache_dir=cache_dir)
    return model


def _cfg(resolution: int = 224, **kwargs: Any) -> Dict[str, Any]:
    pool = -(-resolution // 32)
    return base_cfg(**dict(dict(
        input_size=(3, resolution, resolution), pool_size=(pool, pool),
        # TF EfficientNet evaluation: center crop of size / (size + 32)
        crop_pct=round(resolution / (resolution + 32), 3), interpolation='bicubic',
        first_conv='conv_stem', classifier='classifier'), **kwargs))


def _v2_cfg(resolution: int, test_resolution: int, **kwargs: Any) -> Dict[str, Any]:
    return _cfg(resolution, test_input_size=(3, test_resolution, test_resolution), **kwargs)


_TF_NORM = dict(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD)

# Each cfg is timm's for the network whose checkpoints the architecture's tags load (tf_* where those are TF's).
default_cfgs = family_default_cfgs({
    **{name: _cfg(resolution) for name, (_, _, resolution) in _SCALING.items() if name[-2:] not in ('b8', 'l2')},
    'se_efficientnet_b8': _cfg(672, crop_pct=0.954, **_TF_NORM),
    # timm's default L2 weights are evaluated at 475; the 800 px tag carries its own size.
    'se_efficientnet_l2': _cfg(475, crop_pct=0.936),
    'se_efficientnet_b1_pruned': _cfg(240, crop_pct=0.882, **_TF_NORM),
    'se_efficientnet_b2_pruned': _cfg(260, crop_pct=0.89, **_TF_NORM),
    'se_efficientnet_b3_pruned': _cfg(300, crop_pct=0.904, **_TF_NORM),
    'se_efficientnet_cc_b0_4e': _cfg(224, crop_pct=0.875, **_TF_NORM),
    'se_efficientnet_cc_b0_8e': _cfg(224, crop_pct=0.875, **_TF_NORM),
    'se_efficientnet_cc_b1_8e': _cfg(240, crop_pct=0.882, **_TF_NORM),
    'se_efficientnet_x_b5': _v2_cfg(448, 576, crop_pct=1.0),
    'se_efficientnet_h_b5': _v2_cfg(448, 576, crop_pct=1.0),
    'se_efficientnetv2_rw_t': _v2_cfg(224, 288, crop_pct=1.0),
    'se_efficientnetv2_rw_s': _v2_cfg(288, 384, crop_pct=1.0),
    'se_efficientnetv2_rw_m': _v2_cfg(320, 416, crop_pct=1.0),
    'se_efficientnetv2_b0': _v2_cfg(192, 224, crop_pct=0.875),
    'se_efficientnetv2_b1': _v2_cfg(192, 240, crop_pct=0.882),
    'se_efficientnetv2_b2': _v2_cfg(208, 260, crop_pct=0.89),
    'se_efficientnetv2_b3': _v2_cfg(240, 300, crop_pct=0.9, **_TF_NORM),
    'se_efficientnetv2_s': _v2_cfg(300, 384, crop_pct=1.0, **_TF_NORM),
    'se_efficientnetv2_m': _v2_cfg(384, 480, crop_pct=1.0, **_TF_NORM),
    'se_efficientnetv2_l': _v2_cfg(384, 480, crop_pct=1.0, **_TF_NORM),
    'se_efficientnetv2_xl': _v2_cfg(384, 512, crop_pct=1.0, **_TF_NORM),
})


@register_model
@verified_pretrained
def se_efficientnet_b0(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B0 (224px)."""
    return _create_se_efficientnet('se_efficientnet_b0', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b1(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B1 (240px)."""
    return _create_se_efficientnet('se_efficientnet_b1', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b2(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B2 (260px)."""
    return _create_se_efficientnet('se_efficientnet_b2', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b3(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B3 (300px)."""
    return _create_se_efficientnet('se_efficientnet_b3', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b4(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B4 (380px)."""
    return _create_se_efficientnet('se_efficientnet_b4', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b5(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B5 (456px)."""
    return _create_se_efficientnet('se_efficientnet_b5', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b6(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B6 (528px)."""
    return _create_se_efficientnet('se_efficientnet_b6', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b7(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B7 (600px)."""
    return _create_se_efficientnet('se_efficientnet_b7', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b8(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B8 (672px)."""
    return _create_se_efficientnet('se_efficientnet_b8', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_l2(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-L2 (the Noisy Student network; 475 or 800px)."""
    return _create_se_efficientnet('se_efficientnet_l2', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b1_pruned(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B1 at the widths of timm's pruned B1 (240px)."""
    return _create_se_efficientnet_pruned('se_efficientnet_b1_pruned', pretrained, channel_multiplier=1.0,
                                          depth_multiplier=1.1, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b2_pruned(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B2 at the widths of timm's pruned B2 (260px)."""
    return _create_se_efficientnet_pruned('se_efficientnet_b2_pruned', pretrained, channel_multiplier=1.1,
                                          depth_multiplier=1.2, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_b3_pruned(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-B3 at the widths of timm's pruned B3 (300px)."""
    return _create_se_efficientnet_pruned('se_efficientnet_b3_pruned', pretrained, channel_multiplier=1.2,
                                          depth_multiplier=1.4, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_cc_b0_4e(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-CondConv-B0, 4 experts (224px)."""
    return _create_se_efficientnet('se_efficientnet_cc_b0_4e', pretrained, _gen_efficientnet_condconv, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_cc_b0_8e(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-CondConv-B0, 8 experts (224px)."""
    return _create_se_efficientnet('se_efficientnet_cc_b0_8e', pretrained, _gen_efficientnet_condconv,
                                   experts_multiplier=2, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_cc_b1_8e(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-CondConv-B1, 8 experts (240px)."""
    return _create_se_efficientnet('se_efficientnet_cc_b1_8e', pretrained, _gen_efficientnet_condconv,
                                   depth_multiplier=1.1, experts_multiplier=2, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_x_b5(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-X-B5: EdgeResidual stages 2-3, SE in every block (448px)."""
    return _create_se_efficientnet('se_efficientnet_x_b5', pretrained, _gen_efficientnet_x,
                                   channel_multiplier=1.6, depth_multiplier=2.2, **kwargs)


@register_model
@verified_pretrained
def se_efficientnet_h_b5(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNet-H-B5: EfficientNet-X version 2, 1.92 wide (448px)."""
    return _create_se_efficientnet('se_efficientnet_h_b5', pretrained, _gen_efficientnet_x,
                                   channel_multiplier=1.92, depth_multiplier=2.2, version=2, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_rw_t(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-Tiny, timm's (224px)."""
    return _create_se_efficientnet('se_efficientnetv2_rw_t', pretrained, _gen_efficientnetv2_s,
                                   channel_multiplier=0.8, depth_multiplier=0.9, rw=False, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_rw_s(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-Small, timm's variant from before the reference code (288px)."""
    return _create_se_efficientnet('se_efficientnetv2_rw_s', pretrained, _gen_efficientnetv2_s, rw=True, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_rw_m(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-Medium, timm's variant (320px)."""
    return _create_se_efficientnet('se_efficientnetv2_rw_m', pretrained, _gen_efficientnetv2_s,
                                   channel_multiplier=1.2, depth_multiplier=(1.2,) * 4 + (1.6,) * 2, rw=True,
                                   **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_b0(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-B0 (192px)."""
    return _create_se_efficientnet('se_efficientnetv2_b0', pretrained, _gen_efficientnetv2_base, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_b1(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-B1 (192px)."""
    return _create_se_efficientnet('se_efficientnetv2_b1', pretrained, _gen_efficientnetv2_base,
                                   channel_multiplier=1.0, depth_multiplier=1.1, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_b2(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-B2 (208px)."""
    return _create_se_efficientnet('se_efficientnetv2_b2', pretrained, _gen_efficientnetv2_base,
                                   channel_multiplier=1.1, depth_multiplier=1.2, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_b3(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-B3 (240px)."""
    return _create_se_efficientnet('se_efficientnetv2_b3', pretrained, _gen_efficientnetv2_base,
                                   channel_multiplier=1.2, depth_multiplier=1.4, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_s(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-S (300px)."""
    return _create_se_efficientnet('se_efficientnetv2_s', pretrained, _gen_efficientnetv2_s, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_m(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-M (384px)."""
    return _create_se_efficientnet('se_efficientnetv2_m', pretrained, _gen_efficientnetv2_m, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_l(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-L (384px)."""
    return _create_se_efficientnet('se_efficientnetv2_l', pretrained, _gen_efficientnetv2_l, **kwargs)


@register_model
@verified_pretrained
def se_efficientnetv2_xl(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-EfficientNetV2-XL (384px)."""
    return _create_se_efficientnet('se_efficientnetv2_xl', pretrained, _gen_efficientnetv2_xl, **kwargs)
