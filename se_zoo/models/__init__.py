"""se_zoo's model families; importing this package registers every entrypoint with timm."""
from typing import Iterator, Tuple

import torch.nn as nn

from ._factory import check_model_name, list_models, load_model
from timm.layers import EffectiveSEModule, EffectiveSqueezeExcite, SEModule
from timm.layers import SqueezeExcite as TimmSqueezeExcite
from timm.models.senet import SEModule as LegacySEModule

from ..squeeze_excite import SqueezeExcite
from ._pretrained import reload_manifest
from ._timm_compat import MBConvSqueezeExcite
from .se_byobnet import *
from .se_efficientnet import *
from .se_inception import *
from .se_mobilenet import *
from .se_resnet import *

# Every SE layer class, se_zoo's and timm's: what counts as SE in a profile, what ``add_se`` refuses to stack on,
# and whose gates ``excitations`` reads (``gate_module``).
SE_MODULE_TYPES = (SqueezeExcite, SEModule, EffectiveSEModule, TimmSqueezeExcite, EffectiveSqueezeExcite,
                   MBConvSqueezeExcite, LegacySEModule)


def gate_module(se: nn.Module) -> nn.Module:
    """The module that applies an SE layer's gate: ``gate`` everywhere but timm's legacy SENet, which calls it ``sigmoid``."""
    return se.sigmoid if isinstance(se, LegacySEModule) else se.gate


def named_se_modules(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """``(name, module)`` of every SE layer in ``model`` (``SE_MODULE_TYPES``), in module order."""
    return ((name, m) for name, m in model.named_modules() if isinstance(m, SE_MODULE_TYPES))
