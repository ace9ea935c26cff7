"""SE-MobileNet V1, V2 and V3 on timm's EfficientNet / MobileNetV3 classes and builder.

- V1 (Howard et al. 2017) is the paper's SE-MobileNet: SE in every depthwise-separable block, r=16.
- V2 (Sandler et al. 2018) has no SE of its own; se_zoo adds one after the depthwise conv of every
  inverted residual, reduced to a quarter of the block input (as EfficientNet, which is V2 + SE).
- V3 (Howard et al. 2019) keeps its own SE: after the depthwise conv on the expanded channels, reduced
  to a quarter of them rounded to a multiple of 8, ReLU inside, hard-sigmoid gate. The state_dict loads
  timm's ``mobilenetv3_large_100`` / ``mobilenetv3_small_100`` weights as they are.

The architecture strings are timm's, with an ``_se`` option on every block that carries SE: timm's
generators fix their own SE layer or none, so se_zoo states the SE variant of each network here.

SE keywords: r, rd_divisor, squeeze, gate, se_act, se_bias (defaults per family as above).

The V3 family is extended by the constructor arguments of timm's MobileNetV3 generator, so that every
SE-trained timm MobileNetV3 checkpoint has an se_zoo architecture:

- ``channel_multiplier`` scales every width (0.5, 0.75, 1.0, 1.5), rounded to multiples of 8; below 0.75 the
  stem keeps its 16 channels (``fix_stem``), as in timm's ``mobilenetv3_small_050``.
- ``depth_multiplier`` scales the repeats of every stage (1.2 in ``se_mobilenet_v3_large_150d``).
- ``se_mobilenet_v3_rw`` is timm's first MobileNetV3 (``mobilenetv3_rw``), trained before the reference code
  was out: no skip in the first block, no bias on the head conv, SE reduced with plain rounding and the
  block's own activation inside (ReLU or hard-swish), TF BatchNorm eps (1e-3) by default. Its SE keywords
  default to those (``rd_divisor=1``, ``se_act`` the block's).

TF-ported weights (``tf_mobilenetv3_*``) are tags of the same architectures: they differ only in TF's 'same'
padding and BatchNorm eps, which their tags set (``pad_type='same', bn_eps=0.001``).
"""
from functools import partial
from typing import Any, Dict, List

import torch.nn as nn
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.models import register_model
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3

from ._mbconv_se import mbconv_se_layer, pop_mbconv_se_kwargs
from ._pretrained import base_cfg, family_default_cfgs, verified_pretrained
from ._timm_compat import _create_effnet, _create_mnv3, decode_arch_def, resolve_act_layer, resolve_bn_args, round_channels

# TensorFlow's BatchNorm eps, which timm's mobilenetv3_rw was trained with.
_BN_EPS_TF = 1e-3

_V1_ARCH = [
    ['dsa_r1_k3_s1_c64_se0.0625'],
    ['dsa_r2_k3_s2_c128_se0.0625'],
    ['dsa_r2_k3_s2_c256_se0.0625'],
    ['dsa_r6_k3_s2_c512_se0.0625'],
    ['dsa_r2_k3_s2_c1024_se0.0625'],
]

_V2_ARCH = [
    ['ds_r1_k3_s1_c16_se0.25'],
    ['ir_r2_k3_s2_e6_c24_se0.25'],
    ['ir_r3_k3_s2_e6_c32_se0.25'],
    ['ir_r4_k3_s2_e6_c64_se0.25'],
    ['ir_r3_k3_s1_e6_c96_se0.25'],
    ['ir_r3_k3_s2_e6_c160_se0.25'],
    ['ir_r1_k3_s1_e6_c320_se0.25'],
]

_V3_LARGE_ARCH = [
    ['ds_r1_k3_s1_e1_c16_nre'],
    ['ir_r1_k3_s2_e4_c24_nre', 'ir_r1_k3_s1_e3_c24_nre'],
    ['ir_r3_k5_s2_e3_c40_se0.25_nre'],
    ['ir_r1_k3_s2_e6_c80', 'ir_r1_k3_s1_e2.5_c80', 'ir_r2_k3_s1_e2.3_c80'],
    ['ir_r2_k3_s1_e6_c112_se0.25'],
    ['ir_r3_k5_s2_e6_c160_se0.25'],
    ['cn_r1_k1_s1_c960'],
]

_V3_SMALL_ARCH = [
    ['ds_r1_k3_s2_e1_c16_se0.25_nre'],
    ['ir_r1_k3_s2_e4.5_c24_nre', 'ir_r1_k3_s1_e3.67_c24_nre'],
    ['ir_r1_k5_s2_e4_c40_se0.25', 'ir_r2_k5_s1_e6_c40_se0.25'],
    ['ir_r2_k5_s1_e3_c48_se0.25'],
    ['ir_r3_k5_s2_e6_c96_se0.25'],
    ['cn_r1_k1_s1_c576'],
]

# timm's mobilenetv3_rw: V3-Large with no skip connection in the first block.
_V3_RW_ARCH = [['ds_r1_k3_s1_e1_c16_nre_noskip']] + _V3_LARGE_ARCH[1:]


def _gen_se_mobilenet(
        variant: str, arch_def: List[List[str]], channel_multiplier: float, num_features: int, default_r: float,
        pretrained: bool = False, **kwargs: Any,
) -> EfficientNet:
    """SE-MobileNet V1/V2 with the stem, head and activations of timm's ``_gen_mobilenet_v1/_v2``."""
    # The paper's SE has ReLU inside, whatever the block's own activation (ReLU6 here).
    se_layer = mbconv_se_layer(arch_ratio=float(arch_def[0][0].rsplit('_se', 1)[1]), default_r=default_r,
                               force_act='relu', **pop_mbconv_se_kwargs(kwargs))
    round_chs_fn = partial(round_channels, multiplier=channel_multiplier)
    model_kwargs = dict(
        block_args=decode_arch_def(arch_def),
        num_features=num_features and max(num_features, round_chs_fn(num_features)),
        stem_size=32,
        round_chs_fn=round_chs_fn,
        norm_layer=kwargs.pop('norm_layer', None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, 'relu6'),
        se_layer=se_layer,
        **kwargs,
    )
    return _create_effnet(variant, pretrained, **model_kwargs)


def _gen_se_mobilenet_v3(
        variant: str, arch_def: List[List[str]], num_features: int, channel_multiplier: float = 1.0,
        depth_multiplier: float = 1.0, pretrained: bool = False, **kwargs: Any,
) -> MobileNetV3:
    """SE-MobileNetV3 as timm's ``_gen_mobilenet_v3`` builds it, with se_zoo's SE layer."""
    se_kwargs = dict(dict(gate='hard_sigmoid'), **pop_mbconv_se_kwargs(kwargs))
    # MobileNetV3 rounds the reduced width with timm's round_channels (round_limit 0.9).
    se_layer = mbconv_se_layer(arch_ratio=0.25, default_r=4, force_act='relu', round_limit=0.9, **se_kwargs)
    model_kwargs = dict(
        block_args=decode_arch_def(arch_def, depth_multiplier=depth_multiplier),
        num_features=num_features,
        stem_size=16,
        fix_stem=channel_multiplier < 0.75,
        round_chs_fn=partial(round_channels, multiplier=channel_multiplier),
        norm_layer=partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, 'hard_swish'),
        se_layer=se_layer,
        **kwargs,
    )
    return _create_mnv3(variant, pretrained, **model_kwargs)


def _gen_se_mobilenet_v3_rw(variant: str, pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """SE-MobileNetV3 as timm's ``_gen_mobilenet_v3_rw`` builds it, with se_zoo's SE layer."""
    # timm's first V3 SE: plain rounding of the reduced width and the block's own activation inside.
    se_kwargs = dict(dict(gate='hard_sigmoid', rd_divisor=1), **pop_mbconv_se_kwargs(kwargs))
    se_layer = mbconv_se_layer(arch_ratio=0.25, default_r=4, **se_kwargs)
    model_kwargs = dict(
        block_args=decode_arch_def(_V3_RW_ARCH),
        head_bias=False,
        round_chs_fn=round_channels,
        norm_layer=partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, 'hard_swish'),
        se_layer=se_layer,
        **kwargs,
    )
    return _create_mnv3(variant, pretrained, **model_kwargs)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return base_cfg(first_conv='conv_stem', classifier='classifier', **kwargs)


default_cfgs = family_default_cfgs({
    'se_mobilenet_v1_100': _cfg(),
    'se_mobilenet_v2_050': _cfg(),
    'se_mobilenet_v2_100': _cfg(),
    'se_mobilenet_v2_140': _cfg(),
    'se_mobilenet_v3_large_075': _cfg(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD),
    'se_mobilenet_v3_large_100': _cfg(interpolation='bicubic'),
    'se_mobilenet_v3_large_150d': _cfg(
        input_size=(3, 256, 256), test_input_size=(3, 320, 320), pool_size=(8, 8), crop_pct=0.95, test_crop_pct=1.0,
        mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD),
    'se_mobilenet_v3_small_050': _cfg(interpolation='bicubic'),
    'se_mobilenet_v3_small_075': _cfg(interpolation='bicubic'),
    'se_mobilenet_v3_small_100': _cfg(interpolation='bicubic'),
    'se_mobilenet_v3_rw': _cfg(interpolation='bicubic'),
})


@register_model
@verified_pretrained
def se_mobilenet_v1_100(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-MobileNet (V1, width 1.0): the paper's SE-MobileNet, r=16."""
    return _gen_se_mobilenet('se_mobilenet_v1_100', _V1_ARCH, 1.0, num_features=0, default_r=16,
                             pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v2_050(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-MobileNetV2, width 0.5."""
    return _gen_se_mobilenet('se_mobilenet_v2_050', _V2_ARCH, 0.5, num_features=1280, default_r=4,
                             pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v2_100(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-MobileNetV2, width 1.0."""
    return _gen_se_mobilenet('se_mobilenet_v2_100', _V2_ARCH, 1.0, num_features=1280, default_r=4,
                             pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v2_140(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """SE-MobileNetV2, width 1.4."""
    return _gen_se_mobilenet('se_mobilenet_v2_140', _V2_ARCH, 1.4, num_features=1280, default_r=4,
                             pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v3_large_075(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """SE-MobileNetV3-Large 0.75 (MobileNetV3's own SE, selectable)."""
    return _gen_se_mobilenet_v3('se_mobilenet_v3_large_075', _V3_LARGE_ARCH, 1280, channel_multiplier=0.75,
                                pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v3_large_100(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """SE-MobileNetV3-Large 1.0 (MobileNetV3's own SE, selectable)."""
    return _gen_se_mobilenet_v3('se_mobilenet_v3_large_100', _V3_LARGE_ARCH, 1280, pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v3_large_150d(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """SE-MobileNetV3-Large 1.5 wide, 1.2 deep (MobileNetV3's own SE, selectable)."""
    return _gen_se_mobilenet_v3('se_mobilenet_v3_large_150d', _V3_LARGE_ARCH, 1280, channel_multiplier=1.5,
                                depth_multiplier=1.2, pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v3_small_050(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """SE-MobileNetV3-Small 0.5 (MobileNetV3's own SE, selectable)."""
    return _gen_se_mobilenet_v3('se_mobilenet_v3_small_050', _V3_SMALL_ARCH, 1024, channel_multiplier=0.5,
                                pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v3_small_075(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """SE-MobileNetV3-Small 0.75 (MobileNetV3's own SE, selectable)."""
    return _gen_se_mobilenet_v3('se_mobilenet_v3_small_075', _V3_SMALL_ARCH, 1024, channel_multiplier=0.75,
                                pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v3_small_100(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """SE-MobileNetV3-Small 1.0 (MobileNetV3's own SE, selectable)."""
    return _gen_se_mobilenet_v3('se_mobilenet_v3_small_100', _V3_SMALL_ARCH, 1024, pretrained=pretrained, **kwargs)


@register_model
@verified_pretrained
def se_mobilenet_v3_rw(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """SE-MobileNetV3, timm's first variant (``mobilenetv3_rw``: TF BatchNorm eps, SE with the block's act)."""
    kwargs.setdefault('bn_eps', _BN_EPS_TF)
    return _gen_se_mobilenet_v3_rw('se_mobilenet_v3_rw', pretrained, **kwargs)
