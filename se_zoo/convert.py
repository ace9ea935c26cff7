"""Convert public SE checkpoints into se_zoo weights, and prove that the result computes what the source computed.

Supported sources (``KNOWN_SOURCES``), each with the se_zoo architecture it converts to:

- timm ``seresnet*`` / ``seresnext*`` / ``mobilenetv3_*_100`` / ``efficientnet_b0..b7``: se_zoo's state dicts are
  timm's, except that timm's EfficientNet/MobileNetV3 SE convs are named ``conv_reduce``/``conv_expand``;
- torchvision ``efficientnet_b0..b7``, ``mobilenet_v3_large``, ``mobilenet_v3_small``: ``features.N[.M].block.J`` is
  mapped block by block onto timm's ``blocks.S.B`` (torchvision's MobileNetV3 head ``Linear`` becomes timm's
  1x1 ``conv_head``), and the se_zoo model is built with torchvision's BatchNorm eps where it differs;
- senet.pytorch ``se_resnet50``: torchvision's ResNet layout with a bias-free ``nn.Linear`` SE (``se.fc.0``,
  ``se.fc.2``), which becomes se_zoo's 1x1-conv SE with ``se_bias=False``.

A conversion is all or nothing: every source tensor must land on a se_zoo tensor of the same shape and every
se_zoo tensor must be filled, or ``ConversionError`` lists what did not match and nothing is written. When the
source architecture can be built (timm and torchvision construct it without downloading), both models run on
real photos (``skimage.data``) and the largest absolute logit difference is recorded in the model card.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = [
    'ConversionError', 'Conversion', 'KnownSource', 'LoadedSource', 'LogitDifference', 'KNOWN_SOURCES', 'LAYOUTS',
    'DEFAULT_TOLERANCE', 'convert', 'detect_layout', 'load_source', 'map_state_dict', 'logit_difference',
]

LAYOUTS = ('timm', 'torchvision', 'senet')

# Largest logit difference accepted between source and converted model, as a fraction of the largest |logit|
# (at least 1): fp32 carries ~7 significant digits, and two implementations that order their sums differently
# (torchvision vs timm; se_zoo's fused SE-ResNet eval path) differ by a few ulps per layer.
DEFAULT_TOLERANCE = 1e-5

# Real photos for the equivalence check (bundled with scikit-image, CC0 / public domain).
PHOTO_NAMES = ('chelsea', 'coffee', 'astronaut', 'rocket')

# File name suffixes that make a source a checkpoint file rather than a weight name (a timm tag never is one).
_CHECKPOINT_SUFFIXES = ('.safetensors', '.pth', '.pt', '.bin', '.pkl', '.ckpt', '.tar')

# Preprocessing fields of a timm pretrained cfg that belong to the weights, not to the architecture.
_PREPROCESSING_FIELDS = (
    'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
    'test_crop_pct', 'crop_mode', 'mean', 'std', 'num_classes', 'label_names',
)


class ConversionError(ValueError):
    """A checkpoint that cannot be converted exactly; the message lists what did not match."""


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
            import timm
            return timm.create_model(self.model, num_classes=num_classes)
        if self.layout == 'torchvision':
            import torchvision
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


def _known_source(layout: str, *, model: Optional[str] = None, target: Optional[str] = None) -> KnownSource:
    for known in KNOWN_SOURCES:
        if known.layout == layout and model in (None, known.model) and target in (None, known.target):
            return known
    supported = ', '.join(f'{k.model} -> {k.target}' for k in KNOWN_SOURCES if k.layout == layout)
    raise ConversionError(f'{layout} {model or "checkpoints"} -> se_zoo {target} is not a supported conversion; '
                          f'supported {layout} sources: {supported}')


# ---------------------------------------------------------------------------------------------------------------
# Layouts: key and shape mapping from a source state_dict onto a se_zoo (timm-layout) state_dict.

_SENET_SE = re.compile(r'(.*\.se\.)fc\.([02])\.(weight|bias)$')
_TIMM_EFFNET_SE = re.compile(r'(.*\.se\.)conv_(reduce|expand)\.(weight|bias)$')


def detect_layout(keys: Sequence[str]) -> str:
    """The layout (one of ``LAYOUTS``) that a state_dict's keys are written in."""
    keys = list(keys)
    if any(_SENET_SE.match(k) for k in keys):
        return 'senet'
    if any(k.startswith('features.') and '.block.' in k for k in keys):
        return 'torchvision'
    if any(k.startswith(('conv_stem.', 'blocks.', 'layer1.')) for k in keys):
        return 'timm'
    raise ConversionError(
        f'cannot tell the layout of a checkpoint whose keys start {sorted(keys)[:5]}; '
        f'name it with --source-format ({", ".join(LAYOUTS)})')


# A mapper returns the state_dict under se_zoo's keys and the source keys it has no place for.
_Mapping = Tuple[Dict[str, torch.Tensor], List[str]]


def _linear_as_conv(weight: torch.Tensor) -> torch.Tensor:
    # A Linear on pooled features is a 1x1 conv: (out, in) -> (out, in, 1, 1).
    return weight[:, :, None, None] if weight.ndim == 2 else weight


def _map_timm(state_dict: Dict[str, torch.Tensor], target_keys: Sequence[str]) -> _Mapping:
    mapped = {}
    for key, value in state_dict.items():
        m = _TIMM_EFFNET_SE.match(key)
        mapped[f'{m[1]}fc{1 if m[2] == "reduce" else 2}.{m[3]}' if m else key] = value
    return mapped, []


def _map_senet(state_dict: Dict[str, torch.Tensor], target_keys: Sequence[str]) -> _Mapping:
    # Everything but the SE is torchvision's ResNet naming, which timm's ResNet shares.
    mapped = {}
    for key, value in state_dict.items():
        m = _SENET_SE.match(key)
        if m:
            key = f'{m[1]}fc{1 if m[2] == "0" else 2}.{m[3]}'
            value = _linear_as_conv(value)
        mapped[key] = value
    return mapped, []


# torchvision: one entry of `features` is a ConvNormActivation (`features.N.0` conv, `features.N.1` norm) or a
# block (`features.N.block.J` or, with stages, `features.N.M.block.J`); inside a block, `block.J` is again a
# ConvNormActivation or a SqueezeExcitation (`fc1`, `fc2`).
_TV_FEATURE = re.compile(r'features\.(\d+)\.(?:(\d+)\.)?block\.(\d+)\.(.+)$|features\.(\d+)\.([01])\.(.+)$')
_TV_CLASSIFIER = re.compile(r'classifier\.(\d+)\.(weight|bias)$')

# timm's conv/norm pairs per block type, in forward order.
_TIMM_BLOCK_CONVS = {
    'inverted_residual': (('conv_pw', 'bn1'), ('conv_dw', 'bn2'), ('conv_pwl', 'bn3')),
    'depthwise_separable': (('conv_dw', 'bn1'), ('conv_pw', 'bn2')),
    'conv_bn_act': (('conv', 'bn1'),),
}


def _timm_units(target_keys: Sequence[str]) -> Tuple[List[Tuple[str, Tuple[Tuple[str, str], ...]]], List[str]]:
    """timm EfficientNet/MobileNetV3 as (prefix, conv/norm pairs) units in forward order, and its Linear layers."""
    keys = set(target_keys)
    units = [('', (('conv_stem', 'bn1'),))]
    blocks = sorted({tuple(int(i) for i in k.split('.')[1:3]) for k in keys if k.startswith('blocks.')})
    for stage, index in blocks:
        prefix = f'blocks.{stage}.{index}.'
        kind = ('inverted_residual' if prefix + 'conv_pwl.weight' in keys else
                'depthwise_separable' if prefix + 'conv_dw.weight' in keys else 'conv_bn_act')
        units.append((prefix, _TIMM_BLOCK_CONVS[kind]))
    if 'bn2.weight' in keys:  # EfficientNet: conv_head + bn2 before pooling
        units.append(('', (('conv_head', 'bn2'),)))
    # MobileNetV3: conv_head (no norm) after pooling, the counterpart of torchvision's first classifier Linear.
    linears = (['conv_head'] if 'conv_head.weight' in keys and 'bn2.weight' not in keys else []) + ['classifier']
    return units, linears


def _map_torchvision(state_dict: Dict[str, torch.Tensor], target_keys: Sequence[str]) -> _Mapping:
    # Group the source keys by feature unit (N or N.M), then by layer J inside a block.
    units: Dict[Tuple[int, ...], Dict[Any, Dict[str, torch.Tensor]]] = {}
    linears: Dict[int, Dict[str, torch.Tensor]] = {}
    unmatched = []
    for key, value in state_dict.items():
        m = _TV_FEATURE.match(key)
        c = _TV_CLASSIFIER.match(key)
        if m and m[3] is not None:
            unit = (int(m[1]),) if m[2] is None else (int(m[1]), int(m[2]))
            units.setdefault(unit, {}).setdefault(int(m[3]), {})[m[4]] = value
        elif m:
            units.setdefault((int(m[5]),), {}).setdefault(None, {})[f'{m[6]}.{m[7]}'] = value
        elif c:
            linears.setdefault(int(c[1]), {})[c[2]] = value
        else:
            unmatched.append(key)

    target_units, target_linears = _timm_units(target_keys)
    if len(units) != len(target_units) or len(linears) != len(target_linears):
        raise ConversionError(
            f'the torchvision checkpoint has {len(units)} feature units and {len(linears)} classifier Linear '
            f'layers, the se_zoo model {len(target_units)} and {len(target_linears)}: a different architecture')

    mapped = {}
    for (source_unit, layers), (prefix, convs) in zip(sorted(units.items()), target_units):
        source_name = 'features.' + '.'.join(map(str, source_unit))
        if None in layers:  # a ConvNormActivation of its own (stem, last conv)
            conv_layers, se_layers = [(source_name, layers[None])], []
        else:  # a block: ConvNormActivations and at most one SqueezeExcitation, in forward order
            conv_layers = [(f'{source_name}.block.{j}', layers[j])
                           for j in sorted(layers) if 'fc1.weight' not in layers[j]]
            se_layers = [layers[j] for j in sorted(layers) if 'fc1.weight' in layers[j]]
        if len(conv_layers) != len(convs) or len(se_layers) > 1:
            raise ConversionError(
                f'{source_name} has {len(conv_layers)} conv/norm layers and {len(se_layers)} SE layers; '
                f'its se_zoo counterpart {prefix or "stem/head"} has {len(convs)} conv/norm layers: '
                f'a different architecture')
        for (source_layer, params), (conv, norm) in zip(conv_layers, convs):
            for name, value in params.items():
                index, _, param = name.partition('.')
                module = {'0': conv, '1': norm}.get(index)  # ConvNormActivation: conv, norm, activation
                if module is None:
                    unmatched.append(f'{source_layer}.{name}')
                else:
                    mapped[f'{prefix}{module}.{param}'] = value
        for params in se_layers:
            mapped.update({f'{prefix}se.{name}': value for name, value in params.items()})
    for (_, params), name in zip(sorted(linears.items()), target_linears):
        for param, value in params.items():
            is_conv = name == 'conv_head' and param == 'weight'
            mapped[f'{name}.{param}'] = _linear_as_conv(value) if is_conv else value
    return mapped, unmatched


_MAPPERS: Dict[str, Callable[..., _Mapping]] = {
    'timm': _map_timm, 'torchvision': _map_torchvision, 'senet': _map_senet,
}


def map_state_dict(
        state_dict: Dict[str, torch.Tensor],
        layout: str,
        target_state_dict: Dict[str, torch.Tensor],
) -> Dict[str, torch.Tensor]:
    """Map a ``layout`` state_dict onto ``target_state_dict``'s keys and shapes, completely or not at all.

    Raises:
        ConversionError: listing source keys with no counterpart, se_zoo keys left unfilled and shape mismatches.
    """
    if layout not in _MAPPERS:
        raise ValueError(f'source format {layout!r} is not supported; allowed values are {", ".join(LAYOUTS)}')
    mapped, unmatched = _MAPPERS[layout](state_dict, list(target_state_dict))
    unmatched += [k for k in mapped if k not in target_state_dict]
    missing = [k for k in target_state_dict if k not in mapped]
    mismatched = [f'{k}: checkpoint {tuple(v.shape)}, se_zoo {tuple(target_state_dict[k].shape)}'
                  for k, v in mapped.items() if k in target_state_dict and v.shape != target_state_dict[k].shape]
    if unmatched or missing or mismatched:
        raise ConversionError('the checkpoint does not map completely onto the se_zoo model:\n' + '\n'.join(
            _report(title, items) for title, items in (
                ('unmatched checkpoint keys', unmatched), ('missing se_zoo keys', missing),
                ('shape mismatches', mismatched)) if items))
    return {k: mapped[k] for k in target_state_dict}


def _report(title: str, items: List[str], limit: int = 10) -> str:
    shown = ''.join(f'\n    {item}' for item in items[:limit])
    more = f'\n    ... and {len(items) - limit} more' if len(items) > limit else ''
    return f'  {len(items)} {title}:{shown}{more}'


# ---------------------------------------------------------------------------------------------------------------
# Sources: a local file, a timm `name.tag`, or a torchvision `name.WEIGHTS`.

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
    if path.suffix == '.safetensors':
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(path)
        except SafetensorError as e:
            raise ConversionError(f'{path} is not a readable safetensors file: {e}') from e
    if not allow_pickle:
        raise ValueError(f'{path} is not a .safetensors file; a pickle checkpoint is only read with --allow-pickle '
                         f'(and then with torch.load(weights_only=True))')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for anything beyond tensors and containers, or a damaged file
        raise ConversionError(f'{path} cannot be read with torch.load(weights_only=True): {e}') from e
    # Training checkpoints wrap the weights (timm's train.py: 'state_dict'; others: 'model').
    for wrapper in ('state_dict', 'model'):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ConversionError(f'{path} does not hold a state_dict of tensors')
    # nn.DataParallel prefixes every key with 'module.'.
    if checkpoint and all(k.startswith('module.') for k in checkpoint):
        checkpoint = {k[len('module.'):]: v for k, v in checkpoint.items()}
    return checkpoint


def _load_file(path: Path, target: str, source_format: Optional[str], allow_pickle: bool) -> LoadedSource:
    state_dict = _read_checkpoint(path, allow_pickle)
    layout = source_format or detect_layout(state_dict)
    known = _known_source(layout, target=target)
    return LoadedSource(f'{path.name} ({known.library} {known.model} layout)', layout, known, state_dict,
                        license=None)


def _fetch_timm(name: str, target: str) -> LoadedSource:
    import timm
    arch = name.split('.')[0]
    known = _known_source('timm', model=arch, target=target)
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as e:  # the Hub client raises a variety of connection / cache errors
        raise RuntimeError(f'could not fetch timm weights {name!r} (is the Hugging Face Hub reachable? '
                           f'HF_ENDPOINT / HF_HUB_OFFLINE apply): {e}') from e
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
    import torchvision
    known = _known_source('torchvision', model=name, target=target)
    try:
        weights = torchvision.models.get_model_weights(name)[weights_name]
    except KeyError:
        members = ', '.join(w.name for w in torchvision.models.get_model_weights(name))
        raise ValueError(f'torchvision {name} has no weights {weights_name!r}; it has {members}') from None
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except Exception as e:  # urllib raises URLError / OSError variants
        raise RuntimeError(f'could not fetch torchvision weights {name}.{weights.name} from {weights.url}: {e}') from e
    return LoadedSource(
        f'torchvision {name} {type(weights).__name__}.{weights.name}', 'torchvision', known, model.state_dict(),
        model, license=known.license, top1=weights.meta.get('_metrics', {}).get('ImageNet-1K', {}).get('acc@1'),
        pretrained_cfg=_torchvision_pretrained_cfg(weights))


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
        raise ValueError(f'source format {source_format!r} is not supported; allowed values are {", ".join(LAYOUTS)}')
    path = Path(source)
    if path.is_file():
        return _load_file(path, target, source_format, allow_pickle)
    if path.suffix in _CHECKPOINT_SUFFIXES or os.sep in source:
        raise FileNotFoundError(f'no checkpoint file {source}')
    library, _, name = source.rpartition(':')
    model_name, _, tag = name.partition('.')
    if library not in ('', 'timm', 'torchvision') or not tag:
        raise FileNotFoundError(
            f'source {source!r} is neither a checkpoint file nor a timm name.tag / torchvision name.WEIGHTS')
    if not library:
        import timm
        library = 'timm' if name in timm.list_pretrained(name) else 'torchvision'
    if source_format not in (None, library):
        raise ValueError(f'--source-format {source_format} contradicts source {source!r}, a {library} weight')
    if library == 'timm':
        return _fetch_timm(name, target)
    return _fetch_torchvision(model_name, tag, target)


# ---------------------------------------------------------------------------------------------------------------
# Equivalence on real photos.

def _photo_batch(model: nn.Module) -> torch.Tensor:
    try:
        from skimage import data
    except ImportError:
        raise RuntimeError("the equivalence check runs on skimage.data photos: pip install 'se-zoo[convert]'") from None
    from PIL import Image
    from timm.data import create_transform, resolve_data_config
    transform = create_transform(**resolve_data_config({}, model=model))
    return torch.stack([transform(Image.fromarray(getattr(data, name)())) for name in PHOTO_NAMES])


class LogitDifference(NamedTuple):
    """How a converted model's logits compare with its source's on the same images."""
    max_abs_diff: float
    max_abs_logit: float  # of the source, the scale the difference is judged against
    same_top1: bool

    def within(self, tolerance: float) -> bool:
        """Same top-1 everywhere and a difference of at most ``tolerance`` x max(1, largest |logit|)."""
        return self.same_top1 and self.max_abs_diff <= tolerance * max(1., self.max_abs_logit)


@torch.no_grad()
def logit_difference(source: nn.Module, converted: nn.Module, images: torch.Tensor) -> LogitDifference:
    """How far two models' logits on ``images`` are apart (fp32, eval mode), and whether every top-1 agrees."""
    source_logits = source.eval().float()(images)
    converted_logits = converted.eval().float()(images)
    return LogitDifference(
        (source_logits - converted_logits).abs().max().item(), source_logits.abs().max().item(),
        bool((source_logits.argmax(-1) == converted_logits.argmax(-1)).all()))


# ---------------------------------------------------------------------------------------------------------------
# The conversion.

@dataclass
class Conversion:
    """The result of ``convert``: the folder written, the measured agreement with the source, the Hub commit."""
    folder: Path
    architecture: str
    source: str
    max_abs_logit_diff: Optional[float]
    model_args: Dict[str, Any]
    commit: Optional[str] = None


def _parse_target(target: str) -> Tuple[str, str]:
    import se_zoo
    arch, _, tag = target.partition('.')
    if arch not in se_zoo.list_models():
        raise ValueError(f'{arch!r} is not a se_zoo architecture; see `se-zoo list`')
    if not re.fullmatch(r'[a-z0-9][a-z0-9_]*', tag):
        raise ValueError(f'--to {target!r} needs a tag of lower-case letters, digits and underscores, '
                         f'e.g. {arch}.tv_in1k')
    return arch, tag


def _build_target(known: KnownSource, state_dict: Dict[str, torch.Tensor]) -> Tuple[nn.Module, Dict[str, torch.Tensor]]:
    """The se_zoo model for ``known`` with the checkpoint's classifier width, and the checkpoint mapped onto it."""
    import timm
    model = timm.create_model(known.target, **known.target_kwargs)
    # timm has 21k- and 12k-class tags: take the classifier width from the checkpoint.
    classifier = f'{model.pretrained_cfg["classifier"]}.weight'
    mapped, _ = _MAPPERS[known.layout](state_dict, list(model.state_dict()))
    if classifier in mapped and mapped[classifier].shape[0] != model.num_classes:
        model = timm.create_model(known.target, num_classes=mapped[classifier].shape[0], **known.target_kwargs)
    return model, map_state_dict(state_dict, known.layout, model.state_dict())


def _source_model(loaded: LoadedSource, num_classes: int) -> Optional[nn.Module]:
    if loaded.model is not None:
        return loaded.model
    model = loaded.known.build(num_classes)
    if model is not None:
        missing, unexpected = model.load_state_dict(loaded.state_dict, strict=False)
        if missing or unexpected:
            raise ConversionError(
                f'{loaded.description}: not a {loaded.known.library} {loaded.known.model} checkpoint:\n' + '\n'.join(
                    _report(title, items) for title, items in (
                        ('unexpected keys', unexpected), ('missing keys', missing)) if items))
    return model


def _model_card(loaded: LoadedSource, arch: str, measured: Optional[LogitDifference],
                images: Optional[torch.Tensor], license: str) -> Dict[str, Any]:
    known = loaded.known
    if measured is None:
        check = (f'The equivalence was not measured at conversion time: {known.library} is not an installable '
                 f'package, so its architecture cannot be built here. se_zoo\'s tests check this mapping against '
                 f'a reference implementation of {known.library} {known.model}.')
    else:
        n, _, h, w = images.shape
        check = (f'On {n} real photos (skimage.data: {", ".join(PHOTO_NAMES)}; {h}x{w}, fp32) the converted '
                 f'model\'s logits differ from the source model\'s by at most **{measured.max_abs_diff:.3g}** '
                 f'(max abs; the largest |logit| is {measured.max_abs_logit:.3g}), with identical top-1 predictions.')
    top1 = (f' The source\'s published ImageNet-1k top-1 ({known.library} metadata): {loaded.top1}%.'
            if loaded.top1 is not None else '')
    args = ', '.join(f'`{k}={v!r}`' for k, v in known.target_kwargs.items())
    return {
        'source': f'{loaded.description}, {known.origin_url}',
        'description': (
            f'se_zoo `{arch}`{" (built with " + args + ")" if args else ""} carrying the weights of '
            f'{loaded.description}, converted by `se-zoo convert`.{top1}\n\n{check}'),
        'license': license,
    }


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f'{out} already exists and is not an empty folder; conversion writes a new folder')


def convert(
        source: str,
        target: str,
        out: os.PathLike,
        *,
        source_format: Optional[str] = None,
        allow_pickle: bool = False,
        license: Optional[str] = None,
        tolerance: float = DEFAULT_TOLERANCE,
        push: Optional[str] = None,
) -> Conversion:
    """Convert ``source`` into the se_zoo weight ``target`` (``arch.tag``) and write a publish-ready folder ``out``.

    Args:
        source: a checkpoint file, a timm ``name.tag`` or a torchvision ``name.WEIGHTS`` (see ``load_source``).
        target: the se_zoo ``arch.tag`` the weights become; ``arch`` must be the source's se_zoo counterpart.
        out: the folder to create (model.safetensors, config.json, README.md); it must not exist or be empty.
        source_format: the checkpoint layout (``LAYOUTS``), when detection from its keys is not wanted.
        allow_pickle: read a non-safetensors checkpoint (with ``torch.load(weights_only=True)``).
        license: the weights' licence for the model card; defaults to the source's.
        tolerance: the largest max-abs logit difference (fp32) accepted between source and converted model,
            as a fraction of the source's largest |logit| (at least 1).
        push: a Hub repo id to publish the folder to (``se_zoo.hub.push_folder``), recording ``target`` in
            se_zoo's weights manifest.

    Raises:
        ConversionError: the checkpoint does not map completely onto the se_zoo model, or the converted model
            does not compute what the source computes; nothing is written.
    """
    from .hub import push_folder, save_folder, write_folder_atomically
    arch, tag = _parse_target(target)
    out = Path(out)
    _check_out(out)  # fail before the slow part
    loaded = load_source(source, arch, source_format=source_format, allow_pickle=allow_pickle)
    model, state_dict = _build_target(loaded.known, loaded.state_dict)
    model.load_state_dict(state_dict)
    # The converted weights keep the source's preprocessing and licence, not the se_zoo architecture defaults.
    model.pretrained_cfg = dict(
        model.pretrained_cfg, **loaded.pretrained_cfg, license=license or loaded.license or 'other',
        origin_url=loaded.known.origin_url)
    model.eval()

    measured, images = None, None
    source_model = _source_model(loaded, model.num_classes)
    if source_model is not None:
        images = _photo_batch(model)
        measured = logit_difference(source_model, model, images)
        if not measured.within(tolerance):
            raise ConversionError(
                f'the converted {arch} does not compute what {loaded.description} computes: max abs logit '
                f'difference {measured.max_abs_diff:.3g} (allowed {tolerance:g} x max |logit| '
                f'{measured.max_abs_logit:.3g}), top-1 predictions {"agree" if measured.same_top1 else "differ"}')

    card = _model_card(loaded, arch, measured, images, model.pretrained_cfg['license'])
    _check_out(out)
    write_folder_atomically(out, lambda folder: save_folder(model, folder, model_card=card))
    # A pushed conversion is a published weight: record it in the manifest as arch.tag, pinned to the commit.
    commit = push_folder(out, push, manifest_tag=tag) if push else None
    diff = measured.max_abs_diff if measured is not None else None
    return Conversion(out, arch, loaded.description, diff, dict(model.model_args), commit)
