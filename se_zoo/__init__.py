"""se_zoo: Squeeze-and-Excitation networks as a timm plugin.

``import se_zoo`` registers every se_zoo architecture in timm's model registry, so
``timm.create_model('se_resnet50', num_classes=10)`` builds one like any timm model.

The package is layered; each layer imports only those above it in this list:

- ``errors``, ``files``, ``version``; then ``squeeze_excite`` (the SE layer) and ``state_dicts``;
- ``weights``: ``weights.manifest`` (typed entries), ``weights.fetch`` (verified download), ``weights.pin``;
- ``models`` (the families, on timm's builders) and ``data`` (datasets);
- ``optimize``, ``retrofit``, ``profile``, ``inspection``, ``hub`` (publishing);
- ``convert``, ``finetune``, ``deploy``.

The ``se-zoo`` command line is the package ``se_zoo_cli``, beside this one, so that it can start without torch.
"""
from . import models
from .inspection import excitations
from .models import list_models, load_model
from .optimize import optimize_for_inference
from .retrofit import add_se
from .squeeze_excite import SqueezeExcite
from .version import __version__

__all__ = [
    'SqueezeExcite', 'add_se', 'excitations', 'list_models', 'load_model', 'optimize_for_inference', '__version__',
]
