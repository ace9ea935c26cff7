"""The sources ``se-zoo convert`` reads: a checkpoint file, a timm ``name.tag`` or a torchvision ``name.WEIGHTS``,
and the public architectures whose checkpoints convert to each se_zoo architecture (``KNOWN_SOURCES``)."""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
import torch.nn as nn
import torchvision
from timm.models import load_state_dict

from ..errors import InvalidArgumentError, MissingFileError, did_you_mean
from ..weights.fetch import WeightsError, fetch_pretrained
from ..state_dicts import LAYOUTS, ConversionError, detect_layout

__all__ = ['KnownSource', 'KNOWN_SOURCES', 'LoadedSource', 'SourceUnavailableError', 'load_source', 'known_source']

# File name suffixes that make a source a checkpoint file rather than a weight name (a timm tag never is one).
_CHECKPOINT_SUFFIXES = ('.safetensors', '.pth', '.pt', '.bin', '.pkl', '.ckpt', '.tar')

# Preprocessing fields of a timm pretrained cfg that belong to the weights, not to the architecture.
_PREPROCESSING_FIELDS = (
    'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
    'test_crop_pct', 'crop_mode', 'mean', 'std', 'num_classes', 'label_names',
)


class SourceUnavailableError(ConversionError):
    """The named source weights could not be fetched (no connection, no cache); nothing was converted."""

@dataclass(frozen=True)
class KnownSource:
    """A public architecture whose checkpoints convert to a se_zoo architecture.

    ``target_kwargs`` are the se_zoo keywords that make the se_zoo model compute exactly what the source
    computes (they end up in config.json's ``model_args``); ``license`` is that of the weights the source's
    library publishes, recorded when they are fetched by name.
    """
    layout: str
    model: str
    target: str
    target_kwargs: Dict[str, Any] = field(default_factory=dict)
    license: Optional[str] = None
    origin_url: str = ''

    @property
    def library(self) -> str:
        return {'senet': 'senet.pytorch'}.get(self.layout, self.layout)

    def build(self, num_classes: int = 1000) -> Optional[nn.Module]:
        """The source architecture with random weights, or None where it cannot be built here."""
        if self.layout == 'timm':
            return timm.create_model(self.model, num_classes=num_classes)
        if self.layout == 'torchvision':
            return torchvision.models.get_model(self.model, weights=None, num_classes=num_classes)
        return None  # senet.pytorch is not an installable package


def _timm_sources() -> List[KnownSource]:
    pairs = [(f'seresnet{d}', f'se_resnet{d}') for d in (18, 34, 50, 101, 152)]
    pairs += [(f'seresnext{d}_32x4d', f'se_resnext{d}_32x4d') for d in (50, 101)]
    pairs += [(f'mobilenetv3_{s}_100', f'se_mobilenet_v3_{s}_100') for s in ('large', 'small')]
    pairs += [(f'efficientnet_b{i}', f'se_efficientnet_b{i}') for i in range(8)]
    # The licence of timm weights is per tag (its pretrained cfg); it is read when a tag is fetched.
    return [KnownSource('timm', src, dst, origin_url='https://github.com/huggingface/pytorch-image-models')
            for src, dst in pairs]


_TORCHVISION_URL = 'https://github.com/pytorch/vision'

def _torchvision_efficientnets() -> List[KnownSource]:
    # torchvision's EfficientNet-B0..B4 use BatchNorm's default eps, as timm does; B5..B7 (weights ported from
    # TensorFlow) use eps=1e-3.
    return [KnownSource('torchvision', f'efficientnet_b{i}', f'se_efficientnet_b{i}',
                        {'bn_eps': 1e-3} if i >= 5 else {}, license='bsd-3-clause', origin_url=_TORCHVISION_URL)
            for i in range(8)]


KNOWN_SOURCES: Tuple[KnownSource, ...] = tuple(_timm_sources()) + tuple(_torchvision_efficientnets()) + (
    # torchvision's MobileNetV3 BatchNorm has eps=1e-3 (timm's default is 1e-5).
    KnownSource('torchvision', 'mobilenet_v3_large', 'se_mobilenet_v3_large_100', {'bn_eps': 1e-3},
                license='bsd-3-clause', origin_url=_TORCHVISION_URL),
    KnownSource('torchvision', 'mobilenet_v3_small', 'se_mobilenet_v3_small_100', {'bn_eps': 1e-3},
                license='bsd-3-clause', origin_url=_TORCHVISION_URL),
    # senet.pytorch publishes one pickle and no metadata: its conversions are always from a local file.
    KnownSource('senet', 'se_resnet50', 'se_resnet50', {'se_bias': False},
                origin_url='https://github.com/moskomule/senet.pytorch'),
)


def known_source(layout: str, *, model: Optional[str] = None, target: Optional[str] = None) -> KnownSource:
    for known in KNOWN_SOURCES:
        if known.layout == layout and model in (None, known.model) and target in (None, known.target):
            return known
    supported = ', '.join(f'{k.model} -> {k.target}' for k in KNOWN_SOURCES if k.layout == layout)
    raise ConversionError(f'{layout} {model or "checkpoints"} -> se_zoo {target} is not a supported conversion; '
                          f'supported {layout} sources: {supported}')



@dataclass
class LoadedSource:
    """A source checkpoint, ready to convert.

    ``model`` is the source network carrying the checkpoint, where its architecture can be built, for the
    equivalence check. ``pretrained_cfg`` holds the source's preprocessing, which the converted weights keep.
    """
    description: str
    layout: str
    known: KnownSource
    state_dict: Dict[str, torch.Tensor]
    model: Optional[nn.Module] = None
    license: Optional[str] = None
    top1: Optional[float] = None
    pretrained_cfg: Dict[str, Any] = field(default_factory=dict)


def _read_checkpoint(path: Path, allow_pickle: bool) -> Dict[str, torch.Tensor]:
    if path.suffix != '.safetensors' and not allow_pickle:
        raise InvalidArgumentError(
            f'{path} is not a .safetensors file; a pickle checkpoint is only read with --allow-pickle (and then '
            'with torch.load(weights_only=True))')
    try:
        # timm's loader: safetensors or torch.load(weights_only=True), training wrappers ('state_dict', 'model',
        # EMA weights first) and the 'module.' / '_orig_mod.' prefixes that DataParallel and torch.compile add.
        checkpoint = load_state_dict(str(path), weights_only=True)
    except Exception as e:  # SafetensorError, pickle.UnpicklingError or a damaged file, each with its own type
        raise ConversionError(f'{path} is not a readable checkpoint: {e}') from e
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ConversionError(f'{path} does not hold a state_dict of tensors')
    return checkpoint


def _load_file(path: Path, target: str, source_format: Optional[str], allow_pickle: bool) -> LoadedSource:
    state_dict = _read_checkpoint(path, allow_pickle)
    layout = source_format or detect_layout(state_dict)
    known = known_source(layout, target=target)
    return LoadedSource(f'{path.name} ({known.library} {known.model} layout)', layout, known, state_dict,
                        license=None)


def _fetch_timm(name: str, target: str) -> LoadedSource:
    arch = name.split('.')[0]
    known = known_source('timm', model=arch, target=target)
    cfg = timm.models.get_pretrained_cfg(name) if name in timm.list_pretrained(name) else None
    if cfg is None or not cfg.hf_hub_id:
        tags = [t for t in timm.list_pretrained(f'{arch}.*') if timm.models.get_pretrained_cfg(t).hf_hub_id]
        hint = did_you_mean(name.partition('.')[2], [t.partition('.')[2] for t in tags])
        listed = f'{arch} has {", ".join(tags)}' if tags else f'timm has no Hub weights for {arch}'
        raise InvalidArgumentError(f'timm has no weights {name!r}{hint} ({listed})')
    # Through se_zoo's verified fetch: the Hub's sha256 is checked, and an unreachable Hub is one clear error.
    try:
        path, _ = fetch_pretrained(cfg.hf_hub_id, cfg.hf_hub_filename)
    except WeightsError as e:
        raise SourceUnavailableError(f'could not fetch timm weights {name!r}: {e}') from e
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={'file': str(path)})
    cfg = dict(model.pretrained_cfg)
    return LoadedSource(
        f'timm {name}', 'timm', known, model.state_dict(), model, license=cfg.get('license'),
        pretrained_cfg={k: cfg[k] for k in _PREPROCESSING_FIELDS if cfg.get(k) is not None})


def _torchvision_pretrained_cfg(weights: Any) -> Dict[str, Any]:
    transform = weights.transforms()
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return {
        'input_size': (3, crop, crop), 'crop_pct': round(crop / resize, 4), 'crop_mode': 'center',
        'interpolation': transform.interpolation.value, 'mean': tuple(transform.mean), 'std': tuple(transform.std),
        'num_classes': len(weights.meta['categories']),
    }


def _fetch_torchvision(name: str, weights_name: str, target: str) -> LoadedSource:
    known = known_source('torchvision', model=name, target=target)
    members = [w.name for w in torchvision.models.get_model_weights(name)]
    if weights_name not in members:
        raise InvalidArgumentError(f'torchvision {name} has no weights {weights_name!r}'
                                   f'{did_you_mean(weights_name, members)}; it has {", ".join(members)}')
    weights = torchvision.models.get_model_weights(name)[weights_name]
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except OSError as e:  # urllib's URLError and the socket errors are OSErrors
        raise SourceUnavailableError(f'could not fetch torchvision weights {name}.{weights.name} from {weights.url}: {e}') from e
    return LoadedSource(
        f'torchvision {name} {type(weights).__name__}.{weights.name}', 'torchvision', known, model.state_dict(),
        model, license=known.license, top1=weights.meta.get('_metrics', {}).get('ImageNet-1K', {}).get('acc@1'),
        pretrained_cfg=_torchvision_pretrained_cfg(weights))


def _library_of(source: str, name: str, model_name: str, tag: str) -> str:
    """The library a source without a ``timm:``/``torchvision:`` prefix names: the one whose weights it names,
    else the one whose architecture (and weight naming: torchvision's are upper case) it names, so that an unknown
    tag is reported by the right library."""
    torchvision_models = torchvision.models.list_models()
    if name in timm.list_pretrained(name):
        return 'timm'
    if model_name in torchvision_models and (
            tag.isupper() or tag in [w.name for w in torchvision.models.get_model_weights(model_name)]):
        return 'torchvision'
    if timm.is_model(model_name):
        return 'timm'
    if model_name in torchvision_models:
        return 'torchvision'
    raise InvalidArgumentError(f'source {source!r}: {model_name!r} is neither a timm nor a torchvision model'
                               + did_you_mean(model_name, timm.list_models() + torchvision_models))


def load_source(
        source: str,
        target: str,
        *,
        source_format: Optional[str] = None,
        allow_pickle: bool = False,
) -> LoadedSource:
    """Load ``source`` for conversion to the se_zoo architecture ``target``.

    ``source`` is a local checkpoint (``.safetensors``; a pickle only with ``allow_pickle``), a timm ``name.tag``
    (``timm:`` prefix optional) or a torchvision ``name.WEIGHTS`` such as ``mobilenet_v3_large.IMAGENET1K_V2``
    (``torchvision:`` prefix optional); the last two are fetched by timm / torchvision.
    ``source_format`` overrides the layout detected from a local checkpoint's keys.
    """
    if source_format is not None and source_format not in LAYOUTS:
        raise InvalidArgumentError(f'source format {source_format!r} is not supported; allowed values are {", ".join(LAYOUTS)}')
    path = Path(source)
    if path.is_file():
        return _load_file(path, target, source_format, allow_pickle)
    if path.suffix in _CHECKPOINT_SUFFIXES or os.sep in source:
        raise MissingFileError(f'no checkpoint file {source}')
    library, _, name = source.rpartition(':')
    model_name, _, tag = name.partition('.')
    if library not in ('', 'timm', 'torchvision') or not tag:
        raise InvalidArgumentError(
            f'source {source!r} is neither a checkpoint file nor a timm name.tag / torchvision name.WEIGHTS')
    if not library:
        library = _library_of(source, name, model_name, tag)
    if source_format not in (None, library):
        raise InvalidArgumentError(f'--source-format {source_format} contradicts source {source!r}, a {library} weight')
    if library == 'timm':
        return _fetch_timm(name, target)
    return _fetch_torchvision(model_name, tag, target)


