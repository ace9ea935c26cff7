"""Every private timm API se_zoo uses, in one place, each with the reason no public one serves.

timm's MBConv families are built by module-private generator functions around ``EfficientNetBuilder``; a
plugin that wants timm's exact EfficientNet / MobileNet networks (and so their state-dict layout and feature
API) has to call them. When a timm release moves one of these, this is the only file to change, and
``tests/test_layering.py`` keeps every other module off timm's private names.
"""
from typing import Any, Dict

import torch.nn as nn
# EfficientNet-B0..B7 with a custom se_layer: timm exposes the scaled architecture only through this generator.
from timm.models.efficientnet import _gen_efficientnet
# The builder shared by timm's EfficientNet and MobileNetV1/V2 entrypoints: se_zoo builds V1/V2 with its own
# architecture strings (timm's fix SE off), so it needs the builder, not a finished entrypoint.
from timm.models.efficientnet import _create_effnet
from timm.models.mobilenetv3 import _create_mnv3
# The architecture-string decoder and the arg resolvers the generators above expect their callers to use.
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args, round_channels
# The MBConv block classes, for BatchNorm folding, and timm's MBConv SE layer, to read its gates: timm.models
# re-exports none of them (timm.layers.SqueezeExcite is another class, used by other families).
from timm.models._efficientnet_blocks import ConvBnAct, DepthwiseSeparableConv, EdgeResidual, InvertedResidual
from timm.models._efficientnet_blocks import SqueezeExcite as MBConvSqueezeExcite
# Writes timm's config.json (architecture, model_args recorded by timm.create_model, pretrained_cfg); timm's
# public push_to_hf_hub uploads at once, and se_zoo must write, check and then publish.
from timm.models._hub import save_config_for_hf
# Adds keywords to timm's record of a model's constructor keywords (model._model_args, written to config.json)
# for a change made after construction: the keywords a manifest weight needs, an SE retrofit's. timm.models does
# not export it.
from timm.models._input import update_model_args

__all__ = [
    '_gen_efficientnet', '_create_effnet', '_create_mnv3', 'decode_arch_def', 'resolve_act_layer',
    'resolve_bn_args', 'round_channels', 'ConvBnAct', 'DepthwiseSeparableConv', 'EdgeResidual',
    'InvertedResidual', 'MBConvSqueezeExcite', 'save_config_for_hf', 'update_model_args', 'recorded_model_args',
]


def recorded_model_args(model: nn.Module) -> Dict[str, Any]:
    """The constructor keywords ``timm.create_model`` recorded for ``model`` (empty for a model built otherwise)."""
    return dict(getattr(model, '_model_args', None) or {})
