"""torch.hub entrypoints: one per se_zoo model, e.g. ``torch.hub.load(repo, 'se_resnet50', num_classes=10)``.

Each entrypoint is the model's timm entrypoint, ``name(pretrained=False, **kwargs)``, so it accepts every
``timm.create_model`` keyword and ``pretrained=True`` takes the same verified Hub path as timm does.
"""
dependencies = ['torch', 'timm', 'huggingface_hub', 'safetensors']

import se_zoo as _se_zoo
from timm.models import model_entrypoint as _model_entrypoint

globals().update({_name: _model_entrypoint(_name) for _name in _se_zoo.list_models()})
