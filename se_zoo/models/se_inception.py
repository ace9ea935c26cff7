"""SE-Inception-v3, SE-Inception-v4 and SE-Inception-ResNet-v2 (Hu et al., arXiv:1709.01507) on timm's networks.

The networks, stems, heads and feature API are timm's ``InceptionV3``, ``InceptionV4`` and ``InceptionResnetV2``;
se_zoo adds one ``SqueezeExcite`` where the paper puts it (Fig. 2 and 3):

- SE-Inception (v3, v4): on the output of every Inception module, after the concatenation of its branches. In
  Inception-v3 that is each ``Mixed_*`` module (5b..7c, the grid reductions 6a and 7a included); in Inception-v4
  each Inception-A/B/C and Reduction-A/B module (``features.6`` .. ``features.21``), not the stem's three mixed
  modules (``features.3..5``), which the Inception-v4 paper counts as stem.
- SE-Inception-ResNet-v2: on the residual branch of every Inception-ResNet block (``Block35``, ``Block17``,
  ``Block8``, the final ``block8`` included), after its 1x1 ``conv2d`` and before the residual scale and the add.
  The non-residual mixed modules (``mixed_5b``, ``mixed_6a``, ``mixed_7a``) stay as they are.

Each SE module class is timm's module class plus ``se``, so the state dict is timm's with ``<module>.se.fc1/fc2``
added, timm's checkpoints load with only the SE new, and ``se_zoo.add_se`` turns a timm Inception network into
exactly this layout (both go through ``insert_se``).

SE keywords accepted by every entrypoint: r (16), rd_divisor (8), squeeze, gate, se_act, se_bias.

Identity retrofit (``retrofit_compensation``): with ``fc2`` zero every gate is ``g = gate(0) = 1/2``. In a
residual block the branch's last conv (1x1 with bias) is doubled. In an Inception module the last conv unit of
each branch has its BN affine doubled (ReLU commutes with a positive scale); a branch that is a bare max-pool of
the module input cannot be doubled, so the channels it contributes leave the module halved, and the convs of the
next module that read them get those input channels' weights doubled (pools commute with a positive scale too).
docs/inception.md has the argument and why the result is bit for bit the source's.
"""
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.models import build_model_with_cfg, register_model
from timm.models.inception_resnet_v2 import Block8, Block17, Block35, InceptionResnetV2
from timm.models.inception_v3 import InceptionA as V3A, InceptionB as V3B, InceptionC as V3C
from timm.models.inception_v3 import InceptionD as V3D, InceptionE as V3E, InceptionV3
from timm.models.inception_v4 import InceptionA as V4A, InceptionB as V4B, InceptionC as V4C
from timm.models.inception_v4 import InceptionV4, ReductionA, ReductionB

from ..squeeze_excite import SqueezeExcite, pop_se_kwargs, se_layer_from_kwargs
from ._pretrained import base_cfg, family_default_cfgs, verified_pretrained

__all__ = [
    'SEInceptionV3', 'SEInceptionV4', 'SEInceptionResnetV2', 'insert_se', 'retrofit_compensation',
    'INCEPTION_MODULE_TYPES',
]

SELayer = Callable[..., SqueezeExcite]


class _SEConcatModule:
    """An Inception module with SE on its concatenated output.

    ``branch_ends`` lists, in concatenation order, the conv unit that ends each branch, or None for a branch that
    is a bare max-pool of the module input; ``input_convs`` the conv units that read the module input (directly
    or through an average pool). Together they describe the concatenation for ``retrofit_compensation``.
    """
    branch_ends: Tuple[Optional[str], ...] = ()
    input_convs: Tuple[str, ...] = ()

    def in_channels(self) -> int:
        return self.get_submodule(self.input_convs[0]).conv.in_channels

    def out_channels(self) -> int:
        return sum(self.in_channels() if unit is None else self.get_submodule(unit).conv.out_channels
                   for unit in self.branch_ends)


class _SEV3Module(_SEConcatModule):

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(torch.cat(self._forward(x), 1))


class SEInceptionV3A(_SEV3Module, V3A):
    branch_ends = ('branch1x1', 'branch5x5_2', 'branch3x3dbl_3', 'branch_pool')
    input_convs = ('branch1x1', 'branch5x5_1', 'branch3x3dbl_1', 'branch_pool')


class SEInceptionV3B(_SEV3Module, V3B):
    branch_ends = ('branch3x3', 'branch3x3dbl_3', None)
    input_convs = ('branch3x3', 'branch3x3dbl_1')


class SEInceptionV3C(_SEV3Module, V3C):
    branch_ends = ('branch1x1', 'branch7x7_3', 'branch7x7dbl_5', 'branch_pool')
    input_convs = ('branch1x1', 'branch7x7_1', 'branch7x7dbl_1', 'branch_pool')


class SEInceptionV3D(_SEV3Module, V3D):
    branch_ends = ('branch3x3_2', 'branch7x7x3_4', None)
    input_convs = ('branch3x3_1', 'branch7x7x3_1')


class SEInceptionV3E(_SEV3Module, V3E):
    branch_ends = ('branch1x1', 'branch3x3_2a', 'branch3x3_2b', 'branch3x3dbl_3a', 'branch3x3dbl_3b', 'branch_pool')
    input_convs = ('branch1x1', 'branch3x3_1', 'branch3x3dbl_1', 'branch_pool')


# timm's Inception-v4 modules have no ``_forward``; their concatenation is restated here with the SE after it.
class SEInceptionV4A(_SEConcatModule, V4A):
    branch_ends = ('branch0', 'branch1.1', 'branch2.2', 'branch3.1')
    input_convs = ('branch0', 'branch1.0', 'branch2.0', 'branch3.1')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1))


class SEReductionV4A(_SEConcatModule, ReductionA):
    branch_ends = ('branch0', 'branch1.2', None)
    input_convs = ('branch0', 'branch1.0')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1))


class SEInceptionV4B(_SEConcatModule, V4B):
    branch_ends = ('branch0', 'branch1.2', 'branch2.4', 'branch3.1')
    input_convs = ('branch0', 'branch1.0', 'branch2.0', 'branch3.1')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1))


class SEReductionV4B(_SEConcatModule, ReductionB):
    branch_ends = ('branch0.1', 'branch1.3', None)
    input_convs = ('branch0.0', 'branch1.0')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1))


class SEInceptionV4C(_SEConcatModule, V4C):
    branch_ends = ('branch0', 'branch1_1a', 'branch1_1b', 'branch2_3a', 'branch2_3b', 'branch3.1')
    input_convs = ('branch0', 'branch1_0', 'branch2_0', 'branch3.1')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1_0 = self.branch1_0(x)
        x2_2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        out = torch.cat((
            self.branch0(x),
            self.branch1_1a(x1_0), self.branch1_1b(x1_0),
            self.branch2_3a(x2_2), self.branch2_3b(x2_2),
            self.branch3(x),
        ), 1)
        return self.se(out)


class _SEResidualBlock:
    """An Inception-ResNet block with SE on its residual branch, after the 1x1 ``conv2d``, before scale and add."""

    def out_channels(self) -> int:
        return self.conv2d.out_channels


class SEBlock35(_SEResidualBlock, Block35):

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)
        out = self.se(self.conv2d(out))
        return self.act(out * self.scale + x)


class SEBlock17(_SEResidualBlock, Block17):

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x)), 1)
        out = self.se(self.conv2d(out))
        return self.act(out * self.scale + x)


class SEBlock8(_SEResidualBlock, Block8):

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x)), 1)
        out = self.se(self.conv2d(out))
        out = out * self.scale + x
        if self.relu is not None:
            out = self.relu(out)
        return out


# timm's module class -> its SE counterpart (the modules that carry SE; everything else stays timm's).
_SE_CLASSES = {
    V3A: SEInceptionV3A, V3B: SEInceptionV3B, V3C: SEInceptionV3C,
    V3D: SEInceptionV3D, V3E: SEInceptionV3E,
    V4A: SEInceptionV4A, ReductionA: SEReductionV4A, V4B: SEInceptionV4B,
    ReductionB: SEReductionV4B, V4C: SEInceptionV4C,
    Block35: SEBlock35, Block17: SEBlock17, Block8: SEBlock8,
}
# The timm module classes that ``insert_se`` gives an SE.
INCEPTION_MODULE_TYPES = tuple(_SE_CLASSES)


def insert_se(model: nn.Module, se_layer: SELayer) -> List[Tuple[str, SqueezeExcite]]:
    """Give every Inception module / Inception-ResNet block of a timm Inception network its SE, in place.

    Each module becomes its SE subclass (same attributes, parameters and state-dict keys, plus ``se``), so a
    model built by timm and one built by se_zoo end up with one layout. Returns ``(module name, new SE)`` pairs,
    in forward order; the SE layers are freshly initialised, on the module's device and dtype.
    """
    added = []
    for name, module in list(model.named_modules()):
        se_class = _SE_CLASSES.get(type(module))
        if se_class is None:
            continue
        module.__class__ = se_class
        reference = next(module.parameters())
        module.se = se_layer(module.out_channels(), device=reference.device, dtype=reference.dtype)
        added.append((name, module.se))
    return added


def retrofit_compensation(model: nn.Module) -> Dict[str, torch.Tensor]:
    """How many SE gates each parameter of ``model`` must undo for the SE layers to start as an identity.

    For ``fc2 = 0`` every gate is the constant ``g = gate(0)``; scaling each tensor named here by
    ``(1 / g) ** exponent`` makes the network compute what it computed without SE. Exponents are integer
    tensors that broadcast against the parameter: a scalar for a BN affine or a residual ``conv2d``, a
    per-input-channel (1, C, 1, 1) tensor for a conv that reads channels which left the previous module
    through a bare max-pool. See docs/inception.md.

    Raises:
        RuntimeError: halved channels would leave the last SE module (no timm Inception network does this).
    """
    plan: Dict[str, torch.Tensor] = {}
    one = torch.ones((), dtype=torch.int64)
    carried: Optional[torch.Tensor] = None  # per channel: the gates still to undo on the previous module's output
    for name, module in model.named_modules():
        if isinstance(module, _SEResidualBlock):
            plan[f'{name}.conv2d.weight'] = plan[f'{name}.conv2d.bias'] = one
            continue
        if not isinstance(module, _SEConcatModule):
            continue
        in_channels = module.in_channels()
        if carried is not None and carried.numel() != in_channels and bool(carried.any()):
            raise RuntimeError(f'{name} does not read the output of the SE module before it; the identity '
                               f'retrofit of {type(model).__name__} is not supported')
        if carried is None or carried.numel() != in_channels:
            carried = torch.zeros(in_channels, dtype=torch.int64)
        if bool(carried.any()):
            for unit in module.input_convs:
                plan[f'{name}.{unit}.conv.weight'] = carried.view(1, -1, 1, 1)
        parts = []
        for unit in module.branch_ends:
            if unit is None:  # a max-pool of the input: its channels keep what they carried, and pass this gate too
                parts.append(carried + 1)
            else:  # conv + BN + ReLU: the BN affine takes this gate's factor, ReLU passes it on
                plan[f'{name}.{unit}.bn.weight'] = plan[f'{name}.{unit}.bn.bias'] = one
                parts.append(torch.zeros(module.get_submodule(unit).conv.out_channels, dtype=torch.int64))
        carried = torch.cat(parts)
    if carried is not None and bool(carried.any()):
        raise RuntimeError(f'{type(model).__name__}: the last SE module passes halved channels on to layers that '
                           f'are not Inception modules; its identity retrofit is not supported')
    return plan


class _RetrofitCompensation:
    """se_zoo's Inception networks tell the ``retrofit`` state-dict mapping where their identity factors go."""

    def retrofit_compensation(self) -> Dict[str, torch.Tensor]:
        """Exponents of the SE gate factor per parameter (see ``se_zoo.models.se_inception.retrofit_compensation``)."""
        return retrofit_compensation(self)


class SEInceptionV3(_RetrofitCompensation, InceptionV3):
    """timm's ``InceptionV3`` with SE on every Inception module's output (``Mixed_5b`` .. ``Mixed_7c``)."""

    def __init__(self, *args: Any, se_layer: Optional[SELayer] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        insert_se(self, se_layer or se_layer_from_kwargs())


class SEInceptionV4(_RetrofitCompensation, InceptionV4):
    """timm's ``InceptionV4`` with SE on every Inception-A/B/C and Reduction-A/B module's output."""

    def __init__(self, *args: Any, se_layer: Optional[SELayer] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        insert_se(self, se_layer or se_layer_from_kwargs())


class SEInceptionResnetV2(_RetrofitCompensation, InceptionResnetV2):
    """timm's ``InceptionResnetV2`` with SE on the residual branch of every Inception-ResNet block."""

    def __init__(self, *args: Any, se_layer: Optional[SELayer] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        insert_se(self, se_layer or se_layer_from_kwargs())


def _without_aux_logits(filter_fn: Optional[Callable]) -> Callable:
    # torchvision's Inception-v3 checkpoint carries the auxiliary classifier; a model built without one drops
    # those keys and still loads strictly (timm instead loads that checkpoint non-strictly).
    def filter_aux(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
        if getattr(model, 'AuxLogits', None) is None:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith('AuxLogits.')}
        return filter_fn(state_dict, model) if filter_fn is not None else state_dict
    return filter_aux


def _create_se_inception(model_cls: type, variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    se_layer = se_layer_from_kwargs(**pop_se_kwargs(kwargs))
    if model_cls is SEInceptionV3:
        kwargs['pretrained_filter_fn'] = _without_aux_logits(kwargs.get('pretrained_filter_fn'))
        # a checkpoint without the auxiliary classifier leaves a requested one at its initialisation, as in timm
        kwargs.setdefault('pretrained_strict', not kwargs.get('aux_logits', False))
    feature_cfg = dict(flatten_sequential=True) if model_cls is SEInceptionV4 else None
    return build_model_with_cfg(
        model_cls, variant, pretrained, se_layer=se_layer, feature_cfg=feature_cfg, **kwargs)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    # timm's Inception cfgs: 299 px, TF Inception mean/std (0.5), bicubic; the stems' unpadded convs and pools
    # need 75 px at least
    return base_cfg(
        input_size=(3, 299, 299), min_input_size=(3, 75, 75), pool_size=(8, 8), interpolation='bicubic',
        mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD, **kwargs)


default_cfgs = family_default_cfgs({
    'se_inception_v3': _cfg(first_conv='Conv2d_1a_3x3.conv', classifier='fc'),
    'se_inception_v4': _cfg(first_conv='features.0.conv', classifier='last_linear'),
    'se_inception_resnet_v2': _cfg(crop_pct=0.8975, first_conv='conv2d_1a.conv', classifier='classif'),
})


@register_model
@verified_pretrained
def se_inception_v3(pretrained: bool = False, **kwargs: Any) -> SEInceptionV3:
    """SE-Inception-v3: timm's Inception-v3 with SE on each of its 11 Inception modules (paper Fig. 2)."""
    return _create_se_inception(SEInceptionV3, 'se_inception_v3', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_inception_v4(pretrained: bool = False, **kwargs: Any) -> SEInceptionV4:
    """SE-Inception-v4: timm's Inception-v4 with SE on each of its 16 Inception and Reduction modules."""
    return _create_se_inception(SEInceptionV4, 'se_inception_v4', pretrained, **kwargs)


@register_model
@verified_pretrained
def se_inception_resnet_v2(pretrained: bool = False, **kwargs: Any) -> SEInceptionResnetV2:
    """SE-Inception-ResNet-v2: SE on the residual branch of each of its 40 blocks, before scale and add (Fig. 3)."""
    return _create_se_inception(SEInceptionResnetV2, 'se_inception_resnet_v2', pretrained, **kwargs)
