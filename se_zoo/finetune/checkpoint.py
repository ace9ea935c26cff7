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
from .config import RESUME_MUST_MATCH, FinetuneConfig

__all__ = [
    'TRAINING_STATE_NAME', 'find_last', 'read_init', 'init_model_args', 'load_init', 'has_extra_keys', 'optimizer_state',
    'optimizer_state_dict', 'config_json', 'read_training_state', 'check_resumable',
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


def init_model_args(path: Union[str, Path], model: str) -> Dict[str, Any]:
    """The architecture keywords of an init folder built as ``model`` (its config.json ``model_args``), else {}."""
    config_file = Path(path) / 'config.json'
    if not config_file.is_file():
        return {}
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f'{config_file} is not valid JSON: {e}') from e
    if config.get('architecture') != model.partition('.')[0]:
        return {}
    return {k: v for k, v in (config.get('model_args') or {}).items() if k not in ('num_classes', 'in_chans')}


def has_extra_keys(state: Dict[str, torch.Tensor], model: nn.Module) -> bool:
    return bool(set(state) - set(model.state_dict()))


def load_init(model: nn.Module, state: Dict[str, torch.Tensor], source: Union[str, Path]) -> None:
    # A new dataset has a new classifier: drop the checkpoint's head where its shape differs (timm does the same
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




def read_training_state(last: Path) -> Dict[str, Any]:
    """The JSON half of a ``last/`` checkpoint: epoch, best, history, the recipe, optimizer scalars, scheduler."""
    path = last / f'{TRAINING_STATE_NAME}.json'
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f'{path} is missing: {last} is not a checkpoint se-zoo finetune can resume') from None
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f'{path} is not valid JSON: {e}') from e


def check_resumable(saved: Dict[str, Any], given: Dict[str, Any], epochs_done: int, last: Path) -> None:
    """Refuse a resume whose recipe differs from the checkpoint's, except for more epochs than it has done."""
    changed = [k for k in RESUME_MUST_MATCH if k != 'epochs' and k in given and given[k] != saved.get(k)]
    if changed:
        raise InvalidArgumentError(f'resume: the checkpoint in {last} was trained with different ' + ', '.join(
            f'{k} ({saved.get(k)!r}, now {given[k]!r})' for k in changed) + '; resume with the same recipe, '
            'or start a new run in another --output')
    if 'epochs' in given and given['epochs'] < epochs_done:
        raise InvalidArgumentError(f'resume: the checkpoint in {last} has done {epochs_done} epochs; epochs='
                                   f'{given["epochs"]} would end before it (give at least {epochs_done})')
