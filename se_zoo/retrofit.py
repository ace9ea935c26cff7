"""Retrofit Squeeze-and-Excitation into an existing CNN: ``se_zoo.add_se(model)``.

Each supported block type gets one se_zoo ``SqueezeExcite`` where the paper (or the family's own SE variant) puts it:

- timm ResNet/ResNeXt ``BasicBlock``/``Bottleneck`` and torchvision's: on the residual branch after its last BN,
  before the add (the paper's standard SE-ResNet unit, Fig. 3). timm blocks already call ``self.se`` there; for a
  timm ResNet the result has exactly se_zoo's ``se_resnet*`` layout (``layerX.Y.se.fc1/fc2``).
- timm RegNetX ``Bottleneck``: after the 3x3 group conv, reduced width ``in_chs / 4``: the RegNetY design
  (Radosavovic et al. 2020), so a RegNetX becomes a RegNetY with RegNetY's key names (``se.fc1/fc2``).
- timm ConvNeXt ``ConvNeXtBlock``: at the end of the residual branch (after layer scale), before the add.
- timm Inception-v3 / Inception-v4 modules: on each module's concatenated output; timm Inception-ResNet-v2 blocks:
  on the residual branch after its 1x1 ``conv2d``, before the scale and the add (the paper's SE-Inception and
  SE-Inception-ResNet modules, Fig. 2 and 3). The result has exactly se_zoo's ``se_inception*`` layout.
- plain conv stacks, e.g. torchvision VGG/AlexNet (``nn.Sequential`` of ``Conv2d`` [``BatchNorm2d``] ``ReLU``):
  after every conv unit's activation, as SE-Inception puts SE after each transformation; the activation becomes
  ``Sequential(act, se)``, so every existing state_dict key is kept.

Identity at insertion. A sigmoid gate cannot output exactly 1, and pushing its bias towards +inf would kill its
gradient. Instead ``fc2`` starts at zero, so the gate is exactly ``gate(0) = 0.5`` for every input and channel
(sigmoid and hard-sigmoid alike), and the layer feeding the SE (the BN's affine, ConvNeXt's layer scale, or the
conv) is doubled; in an Inception module, whose max-pool branch passes the module input through, the next
module's convs take the factor for those channels (see ``se_zoo.models.se_inception.retrofit_compensation`` and
docs/inception.md). All are exact power-of-two scalings (through ReLU, which commutes with them), so the output is
bit-for-bit unchanged, while the SE is the paper's ordinary sigmoid SE, identical in layout to a native one, and
learns from the first step: ``fc2`` receives gradients at once, ``fc1`` from the second step on (as any
zero-initialised residual branch). Gates with ``gate(0) == 0`` (tanh, relu) cannot be inserted as an identity
and are refused.
"""
import math
from collections import OrderedDict
from typing import Any, Callable, Iterable, Optional

import timm
import torch
import torch.nn as nn
from timm.models.convnext import ConvNeXtBlock
from timm.models.regnet import Bottleneck as RegNetBottleneck
from timm.models.resnet import BasicBlock, Bottleneck
from torchvision.models import resnet as tv_resnet

from .errors import InvalidArgumentError
from .models import list_models, named_se_modules
from .models._timm_compat import recorded_model_args, update_model_args
from .models.se_inception import INCEPTION_MODULE_TYPES, insert_se, retrofit_compensation
from .squeeze_excite import SqueezeExcite, se_layer_from_kwargs
from .state_dicts import retrofit_state_dict

__all__ = ['add_se', 'name_as_se_zoo_architecture', 'SUPPORTED_FAMILIES', 'TorchvisionSEBasicBlock', 'TorchvisionSEBottleneck', 'SEConvNeXtBlock']

SUPPORTED_FAMILIES = (
    'timm ResNet/ResNeXt (timm.models.resnet BasicBlock, Bottleneck)',
    'torchvision ResNet/ResNeXt/Wide ResNet (torchvision.models.resnet BasicBlock, Bottleneck)',
    'timm RegNetX (timm.models.regnet Bottleneck without SE)',
    'timm ConvNeXt (timm.models.convnext ConvNeXtBlock)',
    'timm Inception-v3, Inception-v4 and Inception-ResNet-v2 (Inception modules, Inception-ResNet blocks)',
    'plain conv stacks such as torchvision VGG and AlexNet (nn.Sequential of Conv2d, optional BatchNorm2d, ReLU)',
)
# Activations f with f(2x) == 2 f(x): the factor folded in before them passes through unchanged.
_HOMOGENEOUS_ACTS = (nn.ReLU, nn.LeakyReLU, nn.Identity)

SELayer = Callable[..., SqueezeExcite]


def _downsampled_identity(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # after the residual branch, as torchvision's blocks do: the downsampled map is not held while the branch runs
    return x if block.downsample is None else block.downsample(x)


class TorchvisionSEBasicBlock(tv_resnet.BasicBlock):
    """torchvision's ``BasicBlock`` with ``self.se`` after ``bn2``, before the add (``add_se`` converts in place)."""
    se: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        out += _downsampled_identity(self, x)
        return self.relu(out)


class TorchvisionSEBottleneck(tv_resnet.Bottleneck):
    """torchvision's ``Bottleneck`` with ``self.se`` after ``bn3``, before the add (``add_se`` converts in place)."""
    se: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        out += _downsampled_identity(self, x)
        return self.relu(out)


class SEConvNeXtBlock(ConvNeXtBlock):
    """timm's ``ConvNeXtBlock`` with ``self.se`` at the end of the residual branch (after layer scale)."""
    se: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        x = self.se(x)
        return self.drop_path(x) + self.shortcut(shortcut)


def add_se(model: nn.Module, **se_kwargs: Any) -> nn.Module:
    """Insert a ``SqueezeExcite`` into every supported block of ``model``, in place, leaving its output unchanged.

    Args:
        model: a CNN of a supported family (``SUPPORTED_FAMILIES``), pretrained or not.
        **se_kwargs: se_zoo's SE keywords: ``r`` (reduction ratio, default 16; RegNet defaults to RegNetY's
            width ``in_chs / 4``), ``rd_divisor``, ``squeeze``, ``gate`` (``sigmoid`` or ``hard_sigmoid``),
            ``se_act``, ``se_bias``.

    Returns:
        ``model``, whose new SE parameters are trainable. The layer before each SE has its scale doubled, to
        cancel the SE's initial gate of exactly 0.5 (see the module docstring).

    Raises:
        InvalidArgumentError: the model already has SE of any kind (``se_zoo.models.SE_MODULE_TYPES``: se_zoo's,
        timm's, timm's legacy SENet's) or other attention blocks, is of no supported family, or the gate is one
        that cannot start as an identity.
    """
    regnet_width = 'r' not in se_kwargs
    se_kwargs.setdefault('r', 16)
    se_layer = se_layer_from_kwargs(**se_kwargs)
    factor = _gate_compensation(se_layer)
    existing = next(named_se_modules(model), None)
    if existing is not None:
        name, module = existing
        raise InvalidArgumentError(f'{type(model).__name__} already has SE blocks ({name or "the model"} is a '
                                   f'{type(module).__name__}); add_se adds them to a network without')
    if any(isinstance(m, INCEPTION_MODULE_TYPES) for m in model.modules()):
        _add_to_inception(model, se_layer, factor)
        return model
    blocks = [(name, m) for name, m in model.named_modules() if _is_residual_block(m)]
    if blocks:
        for name, block in blocks:
            _add_to_block(name, block, se_layer, factor, regnet_width)
        return model
    units = list(_plain_conv_units(model))
    if not units:
        raise InvalidArgumentError(f'add_se does not support {type(model).__name__}: found no block it knows. Supported: '
                         + '; '.join(SUPPORTED_FAMILIES))
    for sequential, act_index, conv, norm in units:
        act = sequential[act_index]
        se = _new_se(se_layer, conv.out_channels, reference=conv.weight)
        _scale_(factor, norm if norm is not None else conv)
        sequential[act_index] = nn.Sequential(OrderedDict(act=act, se=se))
    return model


def _gate_compensation(se_layer: SELayer) -> float:
    gate_at_zero = float(se_layer(8, rd_channels=1).gate(torch.zeros(1)))
    mantissa, _ = math.frexp(gate_at_zero) if gate_at_zero > 0 else (0., 0)
    if mantissa != 0.5:  # only a power of two is cancelled exactly by the inverse scaling
        raise InvalidArgumentError(f'the gate outputs {gate_at_zero} at zero, so add_se cannot insert SE without changing '
                         f'the output; use gate="sigmoid" or gate="hard_sigmoid"')
    return 1. / gate_at_zero


def _add_to_inception(model: nn.Module, se_layer: SELayer, factor: float) -> None:
    # The same conversion and compensation that build and load se_zoo's se_inception* networks, applied in memory:
    # parameters are updated in place, so references to them (an optimizer's) stay valid.
    plain = model.state_dict()
    insert_se(model, se_layer)
    identity = retrofit_state_dict(plain, model.state_dict(), 1. / factor, retrofit_compensation(model))
    model.load_state_dict(identity)


def _is_residual_block(module: nn.Module) -> bool:
    return isinstance(module, (BasicBlock, Bottleneck, tv_resnet.BasicBlock, tv_resnet.Bottleneck,
                               RegNetBottleneck, ConvNeXtBlock))


def _add_to_block(name: str, block: nn.Module, se_layer: SELayer, factor: float, regnet_width: bool) -> None:
    if isinstance(block, (BasicBlock, Bottleneck)):
        if block.se is not None:
            raise InvalidArgumentError(f'{name} already has an attention module ({type(block.se).__name__}); '
                             f'add_se adds SE to blocks without one')
        norm = block.bn2 if isinstance(block, BasicBlock) else block.bn3
        block.se = _new_se(se_layer, norm.num_features, reference=norm.weight)
        _scale_(factor, norm)
    elif isinstance(block, (tv_resnet.BasicBlock, tv_resnet.Bottleneck)):
        norm = block.bn2 if isinstance(block, tv_resnet.BasicBlock) else block.bn3
        block.se = _new_se(se_layer, norm.num_features, reference=norm.weight)
        _scale_(factor, norm)
        # The converted block is torchvision's own plus `se`: same attributes, weights and state_dict keys.
        block.__class__ = (
            TorchvisionSEBasicBlock if isinstance(block, tv_resnet.BasicBlock) else TorchvisionSEBottleneck)
    elif isinstance(block, RegNetBottleneck):
        if not isinstance(block.se, nn.Identity):
            raise InvalidArgumentError(f'{name} already has SE ({type(block.se).__name__}): a RegNetY; add_se adds SE to RegNetX')
        norm = block.conv2.bn
        _check_homogeneous(name, getattr(norm, 'act', None))
        rd_channels = int(round(block.conv1.conv.in_channels * 0.25)) if regnet_width else None
        block.se = _new_se(se_layer, norm.num_features, reference=norm.weight, rd_channels=rd_channels)
        _scale_(factor, norm)
    else:  # ConvNeXtBlock
        channels = block.conv_dw.out_channels
        reference = block.conv_dw.weight
        block.se = _new_se(se_layer, channels, reference=reference)
        if block.gamma is not None:
            with torch.no_grad():
                block.gamma.mul_(factor)
        else:
            _scale_(factor, block.mlp.fc2)
        block.__class__ = SEConvNeXtBlock


def _plain_conv_units(model: nn.Module) -> Iterable[tuple]:
    """(sequential, index of the activation, conv, norm or None) for each Conv2d [BN] ReLU run in a Sequential."""
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(sequential)
        for i, child in enumerate(children):
            if not isinstance(child, nn.Conv2d):
                continue
            norm = None
            j = i + 1
            if j < len(children) and isinstance(children[j], nn.BatchNorm2d) and children[j].affine:
                norm, j = children[j], j + 1
            if j < len(children) and isinstance(children[j], (nn.ReLU, nn.LeakyReLU)):
                yield sequential, j, child, norm


def _check_homogeneous(name: str, act: Optional[nn.Module]) -> None:
    if act is not None and not isinstance(act, _HOMOGENEOUS_ACTS):
        raise InvalidArgumentError(f'{name}: the activation before the SE is {type(act).__name__}; add_se can fold its '
                         f'identity initialisation only through ReLU-like activations')


def _new_se(se_layer: SELayer, channels: int, reference: torch.Tensor, rd_channels: Optional[int] = None) -> SqueezeExcite:
    extra = {} if rd_channels is None else {'rd_channels': rd_channels}
    se = se_layer(channels, device=reference.device, dtype=reference.dtype, **extra)
    nn.init.zeros_(se.fc2.weight)
    if se.fc2.bias is not None:
        nn.init.zeros_(se.fc2.bias)
    return se


def _scale_(factor: float, layer: nn.Module) -> None:
    with torch.no_grad():
        for param in (layer.weight, layer.bias):
            if param is not None:
                param.mul_(factor)


def name_as_se_zoo_architecture(model: nn.Module, **se_kwargs: Any) -> Optional[str]:
    """After ``add_se(model, **se_kwargs)``: name ``model`` as the se_zoo architecture it now is, if there is one.

    A retrofitted timm ResNet has exactly the state dict of its ``se_*`` namesake built with the same keywords
    (checked tensor for tensor on the meta device). Its pretrained cfg and timm's record of its constructor
    keywords are then rewritten to that architecture, so a folder saved from it loads back by name
    (``timm.create_model('local-dir:...')``). Returns the se_zoo name, or None where the retrofit has no
    se_zoo counterpart (torchvision models, RegNet, ConvNeXt, VGG); the model is then left as it was.
    """
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
    target = f'se_{arch}' if arch else None
    if target not in list_models():
        return None
    model_args = dict(recorded_model_args(model), **se_kwargs)
    model_args.pop('pretrained_cfg', None)
    try:
        with torch.device('meta'):
            counterpart = timm.create_model(target, **model_args)
    except (TypeError, ValueError):  # a keyword of the source family that se_zoo's does not take
        return None
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    if shapes != {k: v.shape for k, v in counterpart.state_dict().items()}:
        return None
    model.pretrained_cfg = dict(model.pretrained_cfg, architecture=target)
    update_model_args(model, **se_kwargs)
    return target
