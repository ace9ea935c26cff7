"""Inference-time rewrite of an se_zoo model: BatchNorm folded into the convs, fused SE epilogue, channels_last.

The result is still the same timm model class (``forward_features``, ``forward_head``, ``pretrained_cfg`` and the
feature API keep working); only its BatchNorm layers are gone, so its ``state_dict`` no longer loads into an
unoptimised model. Train mode is meaningless for it: the folded BNs no longer track statistics.
"""
from typing import Dict, Tuple, Type

import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.utils import reparameterize_model
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .models._timm_compat import ConvBnAct, DepthwiseSeparableConv, EdgeResidual, InvertedResidual

__all__ = ['optimize_for_inference']

# (conv, norm) attribute pairs where the norm is applied directly to the conv's output, per timm module class.
# nn.Sequential children (e.g. ResNet downsample: conv, bn) are paired by position instead.
_CONV_NORM_PAIRS: Dict[Type[nn.Module], Tuple[Tuple[str, str], ...]] = {
    ResNet: (('conv1', 'bn1'),),
    BasicBlock: (('conv1', 'bn1'), ('conv2', 'bn2')),
    Bottleneck: (('conv1', 'bn1'), ('conv2', 'bn2'), ('conv3', 'bn3')),
    EfficientNet: (('conv_stem', 'bn1'), ('conv_head', 'bn2')),
    MobileNetV3: (('conv_stem', 'bn1'), ('conv_head', 'norm_head')),
    ConvBnAct: (('conv', 'bn1'),),
    DepthwiseSeparableConv: (('conv_s2d', 'bn_s2d'), ('conv_dw', 'bn1'), ('conv_pw', 'bn2')),
    InvertedResidual: (('conv_s2d', 'bn_s2d'), ('conv_pw', 'bn1'), ('conv_dw', 'bn2'), ('conv_pwl', 'bn3')),
    EdgeResidual: (('conv_exp', 'bn1'), ('conv_pwl', 'bn2')),
}


def optimize_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Return a copy of ``model`` rewritten for fast inference; ``model`` itself is left untouched.

    - Every BatchNorm that directly follows a convolution is folded into that convolution
      (``torch.nn.utils.fusion.fuse_conv_bn_eval``); timm's ``BatchNormAct2d`` leaves its activation behind.
    - ``timm.utils.reparameterize_model`` switches every block that offers it to its inference form; SE-ResNet
      blocks then run the fused SE epilogue: the squeeze of the final 1x1 conv's narrow input passes through
      the folded conv, and the gate multiply shares one pass with the residual add and is written in place.
    - Parameters and buffers are converted to ``channels_last`` (feed channels_last input for the full benefit).

    Works for every se_zoo family (SE-ResNet/ResNeXt, SE-MobileNet V1-V3, SE-EfficientNet) and for their timm
    counterparts. The result is in eval mode, and its outputs match ``model.eval()`` to float32 rounding.

    Args:
        model: An se_zoo (or timm ResNet / EfficientNet / MobileNetV3) model.
        channels_last: Convert the model to the channels_last memory format.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'optimize_for_inference expects an nn.Module, got {type(model).__name__}')
    model = reparameterize_model(model).eval()  # a copy: the caller's model is left untouched
    with torch.no_grad():
        for module in list(model.modules()):
            _fold_children(module)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _fold_children(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        names = [name for name, _ in module.named_children()]
        pairs = tuple(zip(names, names[1:]))
    else:
        pairs = next((p for cls, p in _CONV_NORM_PAIRS.items() if isinstance(module, cls)), ())
    for conv_name, norm_name in pairs:
        conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
        if _foldable(conv, norm):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
            setattr(module, norm_name, _after_norm(norm))


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        and norm.running_mean is not None and norm.running_var is not None
        and conv.out_channels == norm.num_features
    )


def _after_norm(norm: nn.BatchNorm2d) -> nn.Module:
    """What remains of a norm layer once its affine transform lives in the conv: nothing, or timm's drop + act."""
    if not isinstance(norm, BatchNormAct2d):
        return nn.Identity()
    if isinstance(norm.drop, nn.Identity):
        return norm.act
    return nn.Sequential(norm.drop, norm.act)
