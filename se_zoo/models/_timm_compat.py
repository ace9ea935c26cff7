"""Every private timm API se_zoo uses, in one place, each with the reason no public one serves.

timm's MBConv families are built by module-private generator functions around ``EfficientNetBuilder``; a
plugin that wants timm's exact EfficientNet / MobileNet networks (and so their state-dict layout and feature
API) has to call them. When a timm release moves one of these, this is the only file to change, and
``tests/test_layering.py`` keeps every other module off timm's private names.
"""
import pkgutil
from typing import Any, Dict

import torch.nn as nn
# EfficientNet-B0..L2 with a custom se_layer: timm exposes the scaled architecture only through this generator.
from timm.models.efficientnet import _gen_efficientnet
# The other SE-carrying EfficientNet architectures (CondConv, EfficientNet-X/H, EfficientNetV2 base/S/M/L/XL),
# for the same reason: each is stated only inside its generator, whose se_layer keyword se_zoo fills.
from timm.models.efficientnet import (
    _gen_efficientnet_condconv, _gen_efficientnet_x, _gen_efficientnetv2_base, _gen_efficientnetv2_l,
    _gen_efficientnetv2_m, _gen_efficientnetv2_s, _gen_efficientnetv2_xl)
# The builder shared by timm's EfficientNet and MobileNetV1/V2 entrypoints: se_zoo builds V1/V2 with its own
# architecture strings (timm's fix SE off), so it needs the builder, not a finished entrypoint.
from timm.models.efficientnet import _create_effnet
from timm.models.mobilenetv3 import _create_mnv3
# The architecture-string decoder and the arg resolvers the generators above expect their callers to use.
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args, round_channels
# The MBConv block classes, for BatchNorm folding, and timm's MBConv SE layer, to read its gates: timm.models
# re-exports none of them (timm.layers.SqueezeExcite is another class, used by other families).
from timm.models._efficientnet_blocks import ConvBnAct, CondConvResidual, DepthwiseSeparableConv, EdgeResidual
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models._efficientnet_blocks import SqueezeExcite as MBConvSqueezeExcite
# Writes timm's config.json (architecture, model_args recorded by timm.create_model, pretrained_cfg); timm's
# public push_to_hf_hub uploads at once, and se_zoo must write, check and then publish.
from timm.models._hub import save_config_for_hf
# Adds keywords to timm's record of a model's constructor keywords (model._model_args, written to config.json)
# for a change made after construction: the keywords a manifest weight needs, an SE retrofit's. timm.models does
# not export it.
from timm.models._input import update_model_args
# Rebuilds a network's layers at the widths of a pruned checkpoint. timm applies it only inside
# build_model_with_cfg(pruned=True), reading its own width file under timm's own variant and SE layer names.
from timm.models._prune import adapt_model_from_string

__all__ = [
    '_gen_efficientnet', '_gen_efficientnet_condconv', '_gen_efficientnet_x', '_gen_efficientnetv2_base',
    '_gen_efficientnetv2_s', '_gen_efficientnetv2_m', '_gen_efficientnetv2_l', '_gen_efficientnetv2_xl',
    '_create_effnet', '_create_mnv3', 'decode_arch_def', 'resolve_act_layer',
    'resolve_bn_args', 'round_channels', 'ConvBnAct', 'CondConvResidual', 'DepthwiseSeparableConv',
    'EdgeResidual', 'InvertedResidual', 'MBConvSqueezeExcite', 'save_config_for_hf', 'update_model_args',
    'adapt_model_from_string', 'pruned_widths', 'recorded_model_args',
]


def recorded_model_args(model: nn.Module) -> Dict[str, Any]:
    """The constructor keywords ``timm.create_model`` recorded for ``model`` (empty for a model built otherwise)."""
    return dict(getattr(model, '_model_args', None) or {})


def pruned_widths(timm_variant: str) -> str:
    """timm's layer-width spec (``key:[shape]***...``) of a pruned network, e.g. ``efficientnet_b1_pruned``.

    timm ships these as package data of ``timm.models``, read only by its private ``adapt_model_from_file``.
    """
    data = pkgutil.get_data('timm.models', f'_pruned/{timm_variant}.txt')
    if data is None:  # a loader without get_data support; timm's own reader would fail the same way
        raise FileNotFoundError(f'timm.models/_pruned/{timm_variant}.txt')
    return data.decode('utf-8').strip()
