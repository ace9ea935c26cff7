"""SE-ResNet-33-TS and SE-ResNeXt-26-TS on timm's ByobNet, with se_zoo's ``SqueezeExcite``.

timm builds these two SE networks from its bring-your-own-blocks family: a tiered 3x3 stem, SiLU bottleneck
blocks, and an SE on the block's middle width, after the 3x3 conv and before the last 1x1 conv (the ``-ts``
suffix: tiered stem, SiLU). se_zoo takes timm's model definition (``timm.models.byobnet.model_cfgs``) and
changes only its attention layer, so the network, its feature API and its state_dict (``stages.S.B.attn.fc1``
/ ``fc2``) are timm's, and timm's ``seresnet33ts`` / ``seresnext26ts`` weights load as they are.

SE keywords: r (16), rd_divisor (8), squeeze, gate, se_act (ReLU, as in timm, although the blocks use SiLU),
se_bias; the SE sits inside timm's block, so there is no ``placement`` or ``se_stages``.
"""
import dataclasses
from typing import Any, Dict

from timm.models import build_model_with_cfg, register_model
from timm.models.byobnet import ByobNet, model_cfgs

from ..squeeze_excite import pop_se_kwargs, se_layer_from_kwargs
from ._pretrained import base_cfg, family_default_cfgs, verified_pretrained

__all__ = []


def _create_se_byobnet(variant: str, source: str, pretrained: bool = False, **kwargs: Any) -> ByobNet:
    se_layer = se_layer_from_kwargs(**pop_se_kwargs(kwargs))
    model_cfg = dataclasses.replace(model_cfgs[source], attn_layer=se_layer, attn_kwargs={})
    return build_model_with_cfg(
        ByobNet, variant, pretrained, model_cfg=model_cfg, feature_cfg=dict(flatten_sequential=True), **kwargs)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    # timm's cfg for its ByobNet checkpoints: 256 px, bicubic, tested at 288 px
    return base_cfg(**dict({
        'input_size': (3, 256, 256), 'pool_size': (8, 8), 'crop_pct': 0.9, 'interpolation': 'bicubic',
        'test_input_size': (3, 288, 288), 'test_crop_pct': 1.0,
        'first_conv': 'stem.conv1.conv', 'classifier': 'head.fc',
    }, **kwargs))


default_cfgs = family_default_cfgs({
    'se_resnet33ts': _cfg(),
    'se_resnext26ts': _cfg(),
})


@register_model
@verified_pretrained
def se_resnet33ts(pretrained: bool = False, **kwargs: Any) -> ByobNet:
    """SE-ResNet-33-TS: SiLU bottlenecks (2, 3, 3, 2) with SE, tiered stem without pooling, 1280-wide head conv."""
    return _create_se_byobnet('se_resnet33ts', 'seresnet33ts', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_resnext26ts(pretrained: bool = False, **kwargs: Any) -> ByobNet:
    """SE-ResNeXt-26-TS: SiLU grouped bottlenecks (2, 2, 2, 2), group width 32, with SE, tiered stem."""
    return _create_se_byobnet('se_resnext26ts', 'seresnext26ts', pretrained, **kwargs)
