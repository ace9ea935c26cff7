"""What every se_zoo family shares: the base pretrained cfg, the cfgs made from the weights manifest, and the
entrypoint wrapper that fetches and verifies weights before timm loads them.

timm resolves and loads weights inside ``build_model_with_cfg``. se_zoo decides one step earlier *which file*
(see ``se_zoo.weights.fetch``): ``verified_pretrained`` resolves the cfg as timm would, fetches the file and checks
its sha256, and hands timm the verified local path, the manifest's architecture keywords and the manifest's
state-dict mapping as timm's own ``pretrained_filter_fn``. timm then loads as it loads any weight file.
"""
import dataclasses
import functools
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, model_entrypoint, register_model, resolve_pretrained_cfg

from ..errors import InvalidArgumentError
from ..weights.fetch import WeightsNotFoundError, fetch_entry, fetch_pretrained, fetch_url
from ..weights.manifest import WeightEntry, load_manifest, published_cfgs
from ..state_dicts import pretrained_filter
from ._timm_compat import update_model_args

__all__ = ['base_cfg', 'family_default_cfgs', 'verified_pretrained', 'reload_manifest']

# arch -> its cfg without weights, for rebuilding the tagged cfgs when the manifest changes (reload_manifest).
_ARCH_CFGS: Dict[str, Dict[str, Any]] = {}


def base_cfg(**kwargs: Any) -> Dict[str, Any]:
    """An se_zoo architecture's pretrained cfg: ImageNet-1k preprocessing; a family sets its layer names."""
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'license': 'apache-2.0', 'paper_ids': 'arXiv:1709.01507',
        **kwargs,
    }


def family_default_cfgs(arch_cfgs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """A family module's ``default_cfgs``: each architecture's cfg, and one tagged cfg per manifest weight."""
    _ARCH_CFGS.update(arch_cfgs)
    return generate_default_cfgs(published_cfgs(arch_cfgs))


def reload_manifest(path: Optional[Union[str, Path]] = None) -> None:
    """Re-register every se_zoo architecture's pretrained cfgs with timm from the manifest (default: the one in use).

    Family modules read the manifest once, when imported; call this after it changed (publishing with a tag
    does) so that ``timm.create_model(..., pretrained=True)`` and ``timm.list_pretrained`` see the change.
    """
    default_cfgs = generate_default_cfgs(published_cfgs(_ARCH_CFGS, load_manifest(path)))
    for arch in _ARCH_CFGS:
        entrypoint = model_entrypoint(arch)
        module = sys.modules[entrypoint.__module__]
        module.default_cfgs[arch] = default_cfgs[arch]
        with warnings.catch_warnings():
            # register_model warns when a name is registered again; replacing our own cfgs is the point here.
            warnings.simplefilter('ignore', UserWarning)
            register_model(entrypoint)


def _same(a: Any, b: Any) -> bool:
    # model_args come back from JSON with lists where the caller may pass tuples.
    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, (tuple, list)) else v
    return norm(a) == norm(b)


def _weight_args(entry: WeightEntry, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The architecture keywords ``entry``'s weights bring, merged into ``kwargs`` in place.

    An upstream weight needs its keywords (TF padding, a legacy layout): a caller's different value is refused. The
    keywords of se_zoo's own published weights are what they were trained with, defaults the caller may override,
    as timm treats a Hub repo's ``model_args``.
    """
    added = {}
    for key, value in entry.model_args.items():
        if key not in kwargs:
            kwargs[key] = added[key] = value
        elif entry.kind != 'se_zoo' and not _same(kwargs[key], value):
            raise InvalidArgumentError(
                f'{entry.name} weights need {key}={value!r}, not {key}={kwargs[key]!r}; drop {key} or use '
                'pretrained=False')
    return added


def _verified_kwargs(variant: str, kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The entrypoint kwargs for ``pretrained=True`` with the weight source replaced by a verified local file,
    and the architecture keywords the weights brought with them.

    A manifest tag always loads through its mapping and with its keywords, wherever its file comes from: the Hub
    or URL it names (verified), or a local copy the caller hands over with ``pretrained_cfg_overlay=dict(file=PATH)``
    (the caller's to vouch for, as in timm).
    """
    kwargs = dict(kwargs)
    cfg = resolve_pretrained_cfg(
        variant, kwargs.pop('pretrained_cfg', None), kwargs.pop('pretrained_cfg_overlay', None))
    cache_dir = kwargs.get('cache_dir')
    # A tag's entry applies to a cfg from timm's registry (overlaid or not); a Hub repo's or folder's cfg may name
    # the tag it was fine-tuned from, but its weights are in se_zoo's layout already.
    from_registry = cfg.source not in ('hf-hub', 'local-dir') and cfg.architecture and cfg.tag
    entry = load_manifest().get(f'{cfg.architecture}.{cfg.tag}') if from_registry else None
    if cfg.state_dict is not None or cfg.source == 'local-dir' or (cfg.file and cfg.source != 'hf-hub'):
        pass  # weights the caller supplies directly (a state dict, a local file or folder)
    elif entry is not None and (cfg.hf_hub_id, cfg.url) == entry.location:
        cfg = dataclasses.replace(cfg, file=str(fetch_entry(entry, cache_dir)), source='file')
    elif cfg.hf_hub_id:
        path, published = fetch_pretrained(cfg.hf_hub_id, cfg.hf_hub_filename, cache_dir)
        entry = entry or published
        cfg = dataclasses.replace(cfg, file=str(path), source='file')
    elif cfg.url:  # a URL the caller gave: held to the sha256 prefix in its name, as torch.hub would
        cfg = dataclasses.replace(cfg, file=str(fetch_url(cfg.url)), source='file')
    else:
        raise WeightsNotFoundError(
            f'no pretrained weights are published for {variant} (`se-zoo list --pretrained` shows those that are); '
            'use pretrained=False, or load a repo with timm.create_model("hf-hub:ORG/NAME", pretrained=True)')
    weight_args: Dict[str, Any] = {}
    if entry is not None:
        weight_args = _weight_args(entry, kwargs)
        if entry.mapping != 'none':
            kwargs['pretrained_filter_fn'] = pretrained_filter(entry.mapping)
    kwargs['pretrained_cfg'] = cfg.to_dict()
    return kwargs, weight_args


def verified_pretrained(entrypoint: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Wrap a model entrypoint so that ``pretrained=True`` loads only weights whose sha256 was verified first.

    A manifest weight also brings the architecture keywords it needs; they are recorded with the model's
    constructor keywords (timm's own record, which ``config.json`` is written from).
    """
    @functools.wraps(entrypoint)
    def create(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        weight_args: Dict[str, Any] = {}
        if pretrained:
            kwargs, weight_args = _verified_kwargs(entrypoint.__name__, kwargs)
        model = entrypoint(pretrained, **kwargs)
        if weight_args:
            update_model_args(model, **weight_args)
        return model

    return create
