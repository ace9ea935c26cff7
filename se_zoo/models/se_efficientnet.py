"""SE-EfficientNet B0-B7 on timm's EfficientNet (Tan & Le, arXiv:1905.11946).

EfficientNet already places SE after the depthwise conv of every MBConv block, reduced to a quarter of
the block's *input* channels, with SiLU inside and a sigmoid gate. se_zoo builds the network with timm's
own generator and swaps in its ``SqueezeExcite`` so that the paper's design space is selectable. With the
default keywords the state_dict loads timm's ``efficientnet_b0..b7`` weights as they are.

SE keywords: r (reduced width = block input channels / r, default 4), rd_divisor (1: plain rounding),
squeeze, gate ('sigmoid'), se_act (default: the block's SiLU), se_bias.
"""
from typing import Any, Dict

from timm.models import register_model
from timm.models.efficientnet import EfficientNet

from ._mbconv_se import mbconv_se_layer, pop_mbconv_se_kwargs
from ._pretrained import base_cfg, family_default_cfgs, verified_pretrained
from ._timm_compat import _gen_efficientnet

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
}


def _create_se_efficientnet(variant: str, pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    channel_multiplier, depth_multiplier, _ = _SCALING[variant]
    se_kwargs = dict(dict(rd_divisor=1), **pop_mbconv_se_kwargs(kwargs))
    se_layer = mbconv_se_layer(arch_ratio=0.25, default_r=4, **se_kwargs)
    return _gen_efficientnet(
        variant, channel_multiplier=channel_multiplier, depth_multiplier=depth_multiplier,
        pretrained=pretrained, se_layer=se_layer, **kwargs)


def _cfg(resolution: int = 224, **kwargs: Any) -> Dict[str, Any]:
    pool = -(-resolution // 32)
    return base_cfg(
        input_size=(3, resolution, resolution), pool_size=(pool, pool),
        # TF EfficientNet evaluation: center crop of size / (size + 32)
        crop_pct=round(resolution / (resolution + 32), 3), interpolation='bicubic',
        first_conv='conv_stem', classifier='classifier', **kwargs)


default_cfgs = family_default_cfgs({name: _cfg(resolution) for name, (_, _, resolution) in _SCALING.items()})


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
