"""``se-zoo convert``: a public checkpoint in, a publish-ready se_zoo folder out, proven to compute the same."""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import timm
import torch
import torch.nn as nn

from ..data import photo_batch
from ..errors import InvalidArgumentError, did_you_mean
from ..files import write_folder_atomically
from ..weights.manifest import check_tag
from ..hub.publish import push_folder, save_folder
from ..models import list_models
from ..state_dicts import ConversionError, format_key_report, map_state_dict, rename_keys
from .card import conversion_card
from .equivalence import DEFAULT_TOLERANCE, logit_difference
from .sources import KnownSource, LoadedSource, load_source

__all__ = ['Conversion', 'convert']


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
    arch, _, tag = target.partition('.')
    if arch not in list_models():
        hint = did_you_mean(arch, list_models(), '; see `se-zoo list`')
        raise InvalidArgumentError(f'--to {target!r}: {arch!r} is not an se_zoo architecture{hint}')
    try:
        check_tag(tag)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f'--to {target!r} needs a tag, ARCH.TAG such as {arch}.tv_in1k: {e}') from None
    return arch, tag


def _build_target(known: KnownSource, state_dict: Dict[str, torch.Tensor]) -> Tuple[nn.Module, Dict[str, torch.Tensor]]:
    """The se_zoo model for ``known`` with the checkpoint's classifier width, and the checkpoint mapped onto it."""
    model = timm.create_model(known.target, **known.target_kwargs)
    # timm has 21k- and 12k-class tags: take the classifier width from the checkpoint.
    classifier = f'{model.pretrained_cfg["classifier"]}.weight'
    mapped, _ = rename_keys(state_dict, known.layout, list(model.state_dict()))
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
                    format_key_report(title, items) for title, items in (
                        ('unexpected keys', unexpected), ('missing keys', missing)) if items))
    return model


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidArgumentError(f'{out} already exists and is not an empty folder; conversion writes a new folder')


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
        push: a Hub repo id to publish the folder to (``se_zoo.hub.publish.push_folder``), recording ``target`` in
            se_zoo's weights manifest.

    Raises:
        ConversionError: the checkpoint does not map completely onto the se_zoo model, or the converted model
            does not compute what the source computes; nothing is written.
    """
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
        images = photo_batch(model)
        measured = logit_difference(source_model, model, images)
        if not measured.within(tolerance):
            raise ConversionError(
                f'the converted {arch} does not compute what {loaded.description} computes: max abs logit '
                f'difference {measured.max_abs_diff:.3g} (allowed {tolerance:g} x max |logit| '
                f'{measured.max_abs_logit:.3g}), top-1 predictions {"agree" if measured.same_top1 else "differ"}')

    card = conversion_card(loaded, arch, measured, images, model.pretrained_cfg['license'])
    _check_out(out)
    write_folder_atomically(out, lambda folder: save_folder(model, folder, model_card=card))
    # A pushed conversion is a published weight: record it in the manifest as arch.tag, pinned to the commit.
    commit = push_folder(out, push, manifest_tag=tag) if push else None
    diff = measured.max_abs_diff if measured is not None else None
    return Conversion(out, arch, loaded.description, diff, dict(loaded.known.target_kwargs), commit)
