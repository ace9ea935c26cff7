"""Adapt se_zoo's SE keywords to the ``se_layer`` contract of timm's EfficientNetBuilder.

The builder calls ``se_layer(chs, rd_ratio=arch_ratio / exp_ratio, act_layer=block_act)`` where
``arch_ratio`` is the ``_se`` value written in the architecture string. se_zoo states the reduction
as the paper's ``r`` instead, so the builder's ratio is rescaled by ``(1 / r) / arch_ratio``.

Every block the builder makes with an ``_se`` option takes this factory the same way: the depthwise-separable
and inverted-residual blocks, CondConv's ``CondConvResidual`` and the ``EdgeResidual`` of EfficientNet-X (SE on
the block's expanded width; EfficientNetV2's EdgeResidual stages have none). So one SE layer, and one set of SE
keywords, serves every MBConv network se_zoo builds.
"""
from typing import Any, Callable, Dict, Optional

import torch.nn as nn

from ..errors import InvalidArgumentError
from ..squeeze_excite import SqueezeExcite, pop_se_kwargs, se_layer_from_kwargs

__all__ = ['mbconv_se_layer', 'pop_mbconv_se_kwargs']

# SE keywords that only the residual blocks of se_resnet* understand.
RESNET_ONLY_KWARGS = ('placement', 'se_stages')


def mbconv_se_layer(arch_ratio: float, default_r: float, force_act: Optional[Any] = None,
                    **se_kwargs: Any) -> Callable[..., nn.Module]:
    """An SE factory for timm's EfficientNetBuilder built from se_zoo's SE keywords.

    Args:
        arch_ratio: The SE ratio written in the family's architecture strings.
        default_r: The family's reduction ratio when the user gives no ``r``.
        force_act: Inner activation to use instead of the block's (MobileNetV3 forces ReLU).
        **se_kwargs: The user's SE keywords (``SE_KWARGS``).
    """
    r = se_kwargs.pop('r', default_r)
    force_act = se_kwargs.get('se_act') or force_act
    make_se = se_layer_from_kwargs(r=r, **se_kwargs)
    scale = (1. / r) / arch_ratio

    def se_layer(channels: int, rd_ratio: float = arch_ratio, act_layer: Any = None, **kwargs: Any) -> SqueezeExcite:
        act = force_act or act_layer
        return make_se(channels, rd_ratio=rd_ratio * scale, **({'act_layer': act} if act is not None else {}), **kwargs)

    return se_layer


def pop_mbconv_se_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``pop_se_kwargs`` for the MBConv families, which have no placement or stage choice to make."""
    misplaced = [name for name in RESNET_ONLY_KWARGS if name in kwargs]
    if misplaced:
        raise InvalidArgumentError(f'{", ".join(misplaced)}: only se_resnet* models take this (it chooses where SE sits in a '
                         f'residual block); MobileNet and EfficientNet place SE after every depthwise conv')
    return pop_se_kwargs(kwargs)
