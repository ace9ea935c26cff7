"""The checkpoint format of a fine-tuning run, safetensors and JSON only (no pickle).

``OUTPUT/last/`` is a publish-ready folder plus ``training_state.safetensors`` (optimizer tensors) and
``training_state.json`` (epoch, best, history, the recipe, optimizer scalars, scheduler state); ``OUTPUT/best/``
is a publish-ready folder. Folders are swapped in whole (``se_zoo.files.write_folder_atomically``).
"""
import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import InvalidArgumentError, MissingFileError
from .config import FinetuneConfig

__all__ = [
    'TRAINING_STATE_NAME', 'find_last', 'read_init', 'load_init', 'has_extra_keys', 'optimizer_state',
    'optimizer_state_dict', 'config_json',
]

TRAINING_STATE_NAME = 'training_state'


def read_init(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    path = Path(path)
    file = path / 'model.safetensors' if path.is_dir() else path
    if not file.is_file():
        raise MissingFileError(f'init weights {file} not found (give a .safetensors file or a publish-ready folder)')
    if file.suffix != '.safetensors':
        raise InvalidArgumentError(f'init weights must be a .safetensors file or a folder holding model.safetensors, got {file}')
    try:
        return load_file(str(file))
    except SafetensorError as e:
        raise InvalidArgumentError(f'init weights {file} are not a readable safetensors file: {e}') from e


def has_extra_keys(state: Dict[str, torch.Tensor], model: nn.Module) -> bool:
    return bool(set(state) - set(model.state_dict()))


def load_init(model: nn.Module, state: Dict[str, torch.Tensor], source: Union[str, Path]) -> None:
    # A new task has a new classifier: drop the checkpoint's head where its shape differs (timm does the same
    # when num_classes differs from the pretrained one); every other tensor must match.
    own = model.state_dict()
    head = model.pretrained_cfg.get('classifier')
    heads = (head,) if isinstance(head, str) else tuple(head or ())
    state = {k: v for k, v in state.items()
             if not (k.split('.')[0] in {h.split('.')[0] for h in heads} and k in own and own[k].shape != v.shape)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not any(k.startswith(h + '.') for h in heads)]
    if missing or result.unexpected_keys:
        raise InvalidArgumentError(f'init weights {source} do not fit {model.pretrained_cfg.get("architecture")}: '
                         f'missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}')


def optimizer_state(optimizer: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state_dict['state'].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f'{param_id}.{name}'] = value.detach().cpu().contiguous()
            else:
                scalars[f'{param_id}.{name}'] = value
    return tensors, {'param_groups': state_dict['param_groups'], 'scalars': scalars}


def optimizer_state_dict(tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta['scalars'].items()):
        param_id, name = key.split('.', 1)
        state.setdefault(int(param_id), {})[name] = value
    return {'state': state, 'param_groups': meta['param_groups']}


def config_json(config: FinetuneConfig) -> Dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def find_last(output: Path) -> Optional[Path]:
    last = output / 'last'
    if last.is_dir():
        return last
    # the swap into last/ was interrupted between its two renames: the previous checkpoint is whole under this name.
    previous = sorted(output.glob('.last.old-*'), key=lambda p: p.stat().st_mtime)
    return previous[-1] if previous else None


