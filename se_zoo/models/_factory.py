"""One entry point that turns whatever a user names into a model: an se_zoo or timm name, ``name.tag``,
``hf-hub:ORG/NAME``, ``local-dir:PATH`` or a folder written by ``se_zoo.hub.publish.save_folder`` or
``se-zoo finetune``."""
from pathlib import Path
from typing import Any, List, Optional

import timm
import torch.nn as nn
from safetensors import SafetensorError

from ..errors import InvalidArgumentError, MissingFileError, did_you_mean
from ..weights.fetch import fetch_config

__all__ = ['list_models', 'load_model', 'check_model_name']

# The modules whose @register_model entrypoints make up se_zoo (timm registers by module name).
_MODEL_MODULES = ('se_resnet', 'se_byobnet', 'se_mobilenet', 'se_efficientnet', 'se_inception')


def list_models(filter: str = '', pretrained: bool = False) -> List[str]:
    """se_zoo's registered model names (and only those), optionally filtered like ``timm.list_models``.

    With ``pretrained=True``, the ``arch.tag`` names of the weights in the manifest.
    """
    return timm.list_models(filter=filter or '', module=list(_MODEL_MODULES), pretrained=pretrained)


def _close_candidates(name: str) -> List[str]:
    """What ``name`` may have meant: every registered model, and the tags of its architecture if it names one."""
    arch = name.partition('.')[0]
    return timm.list_models() + (timm.list_pretrained(arch + '.*') if '.' in name else [])


def check_model_name(source: str) -> None:
    """Raise ``InvalidArgumentError`` (with close matches) unless ``source`` names a model, tag, repo or folder."""
    if source.startswith(('hf-hub:', 'local-dir:')) or Path(source).is_dir():
        if source.startswith('local-dir:') and not Path(source[len('local-dir:'):]).is_dir():
            raise MissingFileError(f'{source}: no such folder')
        return
    arch, _, tag = source.partition('.')
    if not timm.is_model(arch) or (tag and source not in timm.list_pretrained(source)):
        hint = did_you_mean(source, _close_candidates(source), '; see `se-zoo list` and `se-zoo list --pretrained`')
        raise InvalidArgumentError(f'{source!r} is neither a model, a pretrained tag nor a folder{hint}')


def load_model(source: str, *, pretrained: Optional[bool] = None, **kwargs: Any) -> nn.Module:
    """Build the model ``source`` names, through ``timm.create_model``.

    Args:
        source: a model name (``se_resnet50``), a pretrained tag (``se_resnet50.ra2_in1k``), ``hf-hub:ORG/NAME``,
            ``local-dir:PATH``, or the path of a folder holding timm's ``config.json`` and ``model.safetensors``.
        pretrained: load weights; by default True for everything but a bare model name.
        **kwargs: passed to ``timm.create_model`` (``num_classes``, architecture keywords, ...).

    Raises:
        InvalidArgumentError: ``source`` is no model and no folder; the message lists close matches.
    """
    source = str(source)
    check_model_name(source)
    if Path(source).is_dir():
        source = f'local-dir:{source}'
    is_reference = source.startswith(('hf-hub:', 'local-dir:'))
    if source.startswith('hf-hub:'):
        fetch_config(source[len('hf-hub:'):], kwargs.get('cache_dir'))
    if pretrained is None:
        pretrained = is_reference or '.' in source
    try:
        return timm.create_model(source, pretrained=pretrained, **kwargs)
    except SafetensorError as e:
        raise InvalidArgumentError(f'{source}: model.safetensors is not a readable safetensors file ({e})') from e
