"""se_zoo: Squeeze-and-Excitation networks as a timm plugin.

``import se_zoo`` registers every se_zoo architecture in timm's model registry, so
``timm.create_model('se_resnet50', num_classes=10)`` builds one like any timm model.
"""
from typing import List

import timm

from . import models
from .excitations import excitations
from .finetune import finetune
from .optimize import optimize_for_inference
from .retrofit import add_se
from .squeeze_excite import SqueezeExcite

__version__ = '0.1.0'

# The modules whose @register_model entrypoints make up se_zoo (timm registers by module name).
_MODEL_MODULES = ('se_resnet', 'se_mobilenet', 'se_efficientnet')


def list_models(filter: str = '', pretrained: bool = False) -> List[str]:
    """se_zoo's registered model names (and only those), optionally filtered like ``timm.list_models``."""
    return timm.list_models(filter=filter or '', module=list(_MODEL_MODULES), pretrained=pretrained)


__all__ = ['SqueezeExcite', 'add_se', 'excitations', 'finetune', 'list_models', 'optimize_for_inference', '__version__']
