"""torch.hub entrypoints: one per se_zoo model, e.g. ``torch.hub.load(repo, 'se_resnet50', num_classes=10)``.

Each entrypoint is ``timm.create_model(name, pretrained, **kwargs)``, so it takes every ``timm.create_model``
keyword (``num_classes``, ``checkpoint_path``, the SE keywords such as ``r=8``, ...), records the model's
keywords as timm does (a later ``se_zoo.hub.publish.save_folder`` keeps them), and ``pretrained=True`` takes the
same verified Hub path as timm. ``torch.hub.help`` shows the model's own docstring.
"""
dependencies = ['torch', 'timm', 'huggingface_hub', 'safetensors']

import timm as _timm
import se_zoo as _se_zoo
from timm.models import model_entrypoint as _model_entrypoint


def _hub_entrypoint(name: str):
    def entrypoint(pretrained: bool = False, **kwargs):
        return _timm.create_model(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (
        f'{(_model_entrypoint(name).__doc__ or name).strip()}\n\n'
        f'``timm.create_model({name!r}, pretrained, **kwargs)``: any timm.create_model keyword, e.g. '
        'num_classes, checkpoint_path, and the SE keywords (r, squeeze, gate, ...).')
    return entrypoint


globals().update({_name: _hub_entrypoint(_name) for _name in _se_zoo.list_models()})
