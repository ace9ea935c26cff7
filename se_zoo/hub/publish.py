"""Publish se_zoo weights to the Hugging Face Hub in timm's format.

A publish-ready folder holds exactly what ``timm.create_model('hf-hub:ORG/NAME', pretrained=True)`` reads:

- ``model.safetensors``: the state_dict (never pickle);
- ``config.json``: timm's format (``architecture``, ``num_classes``, ``num_features``, ``global_pool``,
  ``model_args`` with the constructor keywords ``timm.create_model`` recorded, ``pretrained_cfg``), written by
  timm's own ``save_config_for_hf`` so that timm reads it back as it reads its own;
- ``README.md``: a model card with Hub YAML metadata (``library_name: timm``, tags, licence, datasets,
  metrics as ``model-index``) and a usage snippet.

``save_folder`` writes such a folder, ``push_folder`` uploads one (and, given ``manifest_tag``, records the
published weight in se_zoo's manifest), ``push`` does both. Every file is written atomically, and everything
is checked before the first byte is uploaded.
"""
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import timm
import torch
import torch.nn as nn
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants
from huggingface_hub.errors import HfHubHTTPError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..errors import InvalidArgumentError, MissingFileError, SEZooError
from ..files import atomic_write_bytes
from ..models import list_models, reload_manifest
from ..models._timm_compat import save_config_for_hf
from ..weights.fetch import CONNECTION_ERRORS, HubUnreachableError, file_sha256
from ..weights.manifest import CFG_FIELDS, WeightEntry, MANIFEST_ENV, MANIFEST_PATH, check_tag, manifest_path, update_manifest

__all__ = [
    'WEIGHTS_NAME', 'CONFIG_NAME', 'CARD_NAME', 'save_folder', 'push_folder', 'push', 'read_folder_card',
    'check_recordable', 'PublishError',
]

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'
_PUBLISHED_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
_CARD_TAGS = ['image-classification', 'timm', 'se_zoo', 'squeeze-and-excitation']
# model_card keys this module understands; anything else is a mistake worth reporting.
_CARD_KEYS = frozenset({
    'license', 'datasets', 'metrics', 'eval_dataset', 'source', 'recipe', 'description', 'base_model', 'tags',
})
_PUBLIC_HUB = 'https://huggingface.co'


class PublishError(SEZooError, RuntimeError):
    """The Hub refused an upload (permissions, quota, a bad repo id); nothing was recorded in the manifest."""
# timm repeats the head and input keywords in model_args, though config.json states them at its root and in
# pretrained_cfg; loaders that pass both (transformers' TimmWrapper) then get each keyword twice.
_HEAD_ARGS = ('num_classes', 'in_chans', 'global_pool')


def _state_dict_bytes(model: nn.Module) -> bytes:
    # Byte-for-byte reproducible for the same tensors, so re-publishing identical weights changes nothing.
    tensors = {k: v.detach().to('cpu').contiguous() for k, v in model.state_dict().items()}
    return save(tensors, metadata={'format': 'pt'})


def _config(model: nn.Module) -> Dict[str, Any]:
    # Class names at the root of config.json too, where timm's config writer puts them when asked and where
    # transformers' TimmWrapper reads its id2label.
    label_names = model.pretrained_cfg.get('label_names')
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CONFIG_NAME
        save_config_for_hf(model, str(path), model_config={'label_names': list(label_names)} if label_names else None)
        config = json.loads(path.read_text())
    model_args = {k: v for k, v in (config.pop('model_args', None) or {}).items() if k not in _HEAD_ARGS}
    if model_args:
        config['model_args'] = model_args
    return config


def _check_card(model_card: Dict[str, Any]) -> None:
    unknown = set(model_card) - _CARD_KEYS
    if unknown:
        raise InvalidArgumentError(f'unknown model_card keys {sorted(unknown)}; known keys are {sorted(_CARD_KEYS)}')
    metrics = model_card.get('metrics') or {}
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise InvalidArgumentError(f"model_card['metrics'] must map a metric name to a number, got {metrics!r}")
    if metrics and not (model_card.get('eval_dataset') or model_card.get('datasets')):
        raise InvalidArgumentError("model_card['metrics'] need the dataset they were measured on: "
                         "give model_card['eval_dataset'] or model_card['datasets']")


def _card_text(model: nn.Module, config: Dict[str, Any], model_card: Dict[str, Any], repo_id: Optional[str]) -> str:
    arch = config['architecture']
    datasets: List[str] = list(model_card.get('datasets') or [])
    metrics: Dict[str, float] = dict(model_card.get('metrics') or {})
    eval_dataset = model_card.get('eval_dataset') or (datasets[0] if datasets else None)
    license = model_card.get('license') or model.pretrained_cfg.get('license') or 'apache-2.0'
    extra = {k: model_card[k] for k in ('source', 'recipe') if model_card.get(k)}
    data = ModelCardData(
        library_name='timm',
        pipeline_tag='image-classification',
        license=license,
        tags=list(dict.fromkeys(_CARD_TAGS + list(model_card.get('tags') or []))),
        datasets=datasets or None,
        base_model=model_card.get('base_model'),
        metrics=list(metrics) or None,
        model_name=arch,
        eval_results=[
            EvalResult(task_type='image-classification', dataset_type=eval_dataset, dataset_name=eval_dataset,
                       metric_type=name, metric_name=name, metric_value=value)
            for name, value in metrics.items()
        ] or None,
        **extra,
    )
    model_args = config.get('model_args') or {}
    kwargs = ''.join(f', {k}={v!r}' for k, v in model_args.items())
    lines = [f'# {arch}', '']
    lines += [model_card.get('description') or
              f'{arch}: a Squeeze-and-Excitation network (Hu et al., '
              '[arXiv:1709.01507](https://arxiv.org/abs/1709.01507)) from se_zoo, a timm plugin.', '']
    details = [f'- **Architecture:** `{arch}`{" with `" + kwargs[2:] + "`" if kwargs else ""}',
               f'- **Classes:** {model.num_classes}',
               f'- **Input size:** {tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))}']
    if model_card.get('source'):
        details.append(f'- **Source:** {model_card["source"]}')
    if model_card.get('recipe'):
        details.append(f'- **Recipe:** {model_card["recipe"]}')
    if metrics:
        details.append(f'- **Metrics ({eval_dataset}):** ' + ', '.join(f'{k} {v}' for k, v in metrics.items()))
    lines += ['## Model details', ''] + details + ['']
    lines += [
        '## Usage', '',
        '```python',
        'import timm',
        'import se_zoo  # registers the se_* architectures with timm',
        '',
        f"model = timm.create_model('hf-hub:{repo_id or 'ORG/NAME'}', pretrained=True).eval()",
        '```', '',
        'se_zoo checks the sha256 of `model.safetensors` against the one the Hub reports before loading it.', '',
    ]
    card = ModelCard.from_template(data, template_str='---\n{{ card_data }}\n---\n\n' + '\n'.join(lines))
    return str(card)


def save_folder(
        model: nn.Module,
        folder: Union[str, Path],
        *,
        model_card: Optional[Dict[str, Any]] = None,
        repo_id: Optional[str] = None,
) -> Path:
    """Write ``model`` as a publish-ready folder: ``model.safetensors``, timm's ``config.json`` and ``README.md``.

    Args:
        model: an se_zoo model, built by ``timm.create_model`` (which records the keywords config.json needs).
        folder: created if missing; the three files are replaced atomically, other files are left alone.
        model_card: metadata for README.md and the manifest: ``license``, ``datasets`` (list), ``metrics``
            ({name: value}, measured on ``eval_dataset`` or the first dataset), ``source`` (where the weights
            come from), ``recipe`` (how they were trained), ``description``, ``base_model``, ``tags``.
        repo_id: the Hub repo the folder is meant for, named in the card's usage snippet.

    Returns:
        The folder.
    """
    model_card = dict(model_card or {})
    _check_card(model_card)
    if not getattr(model, 'pretrained_cfg', None):
        raise InvalidArgumentError('save_folder needs a timm model (one with a pretrained_cfg); build it with timm.create_model')
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Render everything before writing anything, so a failure leaves the folder as it was.
    config = _config(model)
    files = {
        WEIGHTS_NAME: _state_dict_bytes(model),
        CONFIG_NAME: (json.dumps(config, indent=4) + '\n').encode(),
        CARD_NAME: _card_text(model, config, model_card, repo_id).encode('utf-8'),
    }
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
    return folder


def read_folder_card(folder: Union[str, Path]) -> Dict[str, Any]:
    """The manifest-relevant metadata of a publish-ready folder's README.md: licence, source, recipe, metrics."""
    data = ModelCard.load(Path(folder) / CARD_NAME).data
    metrics = {r.metric_name or r.metric_type: r.metric_value for r in (data.eval_results or [])}
    datasets = {r.dataset_type for r in (data.eval_results or [])}
    info = {
        'license': data.license,
        'source': data.get('source'),
        'recipe': data.get('recipe'),
        'metrics': metrics,
        'eval_dataset': datasets.pop() if len(datasets) == 1 else None,
    }
    return {k: v for k, v in info.items() if v}


def _check_folder(folder: Path) -> Dict[str, Any]:
    """Refuse to publish a folder that timm could not load into its architecture, with the reason."""
    missing = [name for name in _PUBLISHED_FILES if not (folder / name).is_file()]
    if missing:
        raise MissingFileError(f'{folder} is not a publish-ready folder: {", ".join(missing)} missing '
                                f'(write one with se_zoo.hub.publish.save_folder)')
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f'{folder / CONFIG_NAME} is not valid JSON: {e}') from e
    arch = config.get('architecture')
    if arch not in list_models():
        raise InvalidArgumentError(f'{folder / CONFIG_NAME} names architecture {arch!r}, which is not an se_zoo model '
                         f'(see se_zoo.list_models())')
    model_args = dict(config.get('model_args') or {})
    model_args.setdefault('num_classes', config.get('num_classes', 1000))
    with torch.device('meta'):
        model = timm.create_model(arch, **model_args)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(folder / WEIGHTS_NAME, framework='pt') as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except SafetensorError as e:
        raise InvalidArgumentError(f'{folder / WEIGHTS_NAME} is not a readable safetensors file: {e}') from e
    if found != expected:
        diff = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        raise InvalidArgumentError(f'{folder / WEIGHTS_NAME} does not match {arch} with model_args {model_args} '
                         f'(first differing tensors: {diff[:5]})')
    return config


def push_folder(
        folder: Union[str, Path],
        repo_id: str,
        *,
        revision: str = 'main',
        commit_message: Optional[str] = None,
        token: Optional[str] = None,
        private: bool = False,
        manifest_tag: Optional[str] = None,
) -> str:
    """Upload a publish-ready folder (see ``save_folder``) to the Hub and return the commit id.

    The folder is checked first: its config.json must name an se_zoo architecture whose state_dict matches
    ``model.safetensors`` key for key and shape for shape, so that what is published really loads.
    Uploading identical files again creates no commit; the id returned is then the branch's current head.

    Args:
        folder: the folder written by ``save_folder``.
        repo_id: ``ORG/NAME`` on the Hub (created if missing).
        revision: the branch to commit to.
        commit_message: defaults to ``Publish <architecture>``.
        token: a Hub token; by default huggingface_hub's (``HF_TOKEN`` or ``hf auth login``).
        private: create the repo private.
        manifest_tag: if given, record the weight as ``<architecture>.<manifest_tag>`` in se_zoo's manifest
            (``se_zoo.weights.manifest.manifest_path()``), pinned to the returned commit, and register it with timm.
    """
    folder = Path(folder)
    config = _check_folder(folder)
    arch = config['architecture']
    if manifest_tag is not None:  # everything the manifest entry needs is checked before anything is uploaded
        check_tag(manifest_tag)
        check_recordable()
    api = HfApi(token=token, library_name='se_zoo')
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            allow_patterns=list(_PUBLISHED_FILES),
            commit_message=commit_message or f'Publish {arch}',
        )
    except HfHubHTTPError as e:
        raise PublishError(f'the Hub at {api.endpoint} refused to publish {repo_id}: {e}') from e
    except CONNECTION_ERRORS as e:
        raise HubUnreachableError(f'cannot reach the Hub at {api.endpoint} (HF_ENDPOINT) to publish {repo_id}: '
                                  f'{e}; nothing was uploaded or recorded') from e
    commit_id = commit.oid
    if manifest_tag is not None:
        _record_published(f'{arch}.{manifest_tag}', repo_id=repo_id, revision=commit_id,
                          weights_file=folder / WEIGHTS_NAME, config=config, card=read_folder_card(folder))
    return commit_id


def push(
        model: nn.Module,
        repo_id: str,
        *,
        model_card: Optional[Dict[str, Any]] = None,
        revision: str = 'main',
        commit_message: Optional[str] = None,
        token: Optional[str] = None,
        private: bool = False,
        manifest_tag: Optional[str] = None,
) -> str:
    """Publish ``model`` to the Hub: ``save_folder`` into a temporary folder, then ``push_folder``.

    Returns the commit id. See ``save_folder`` for ``model_card`` and ``push_folder`` for the other options.
    """
    with tempfile.TemporaryDirectory(prefix='se_zoo_push_') as tmp:
        save_folder(model, tmp, model_card=model_card, repo_id=repo_id)
        return push_folder(tmp, repo_id, revision=revision, commit_message=commit_message, token=token,
                           private=private, manifest_tag=manifest_tag)


def check_recordable(path: Optional[Union[str, Path]] = None) -> None:
    """Refuse to record a weight in the shipped manifest unless it is published on the real Hub.

    The shipped manifest is what every se_zoo user resolves ``pretrained=True`` against, so it may only name
    weights on https://huggingface.co; publishing to another endpoint (a mirror, a test server) needs a manifest
    of its own (``SE_ZOO_WEIGHTS_MANIFEST``).
    """
    path = Path(path) if path is not None else manifest_path()
    if path.resolve() == MANIFEST_PATH.resolve() and constants.ENDPOINT != _PUBLIC_HUB:
        raise InvalidArgumentError(
            f'the shipped weights manifest {MANIFEST_PATH} lists weights on {_PUBLIC_HUB} only, and HF_ENDPOINT is '
            f'{constants.ENDPOINT}; set {MANIFEST_ENV} to a manifest of your own')


def _record_published(name: str, *, repo_id: str, revision: str, weights_file: Path, config: Dict[str, Any],
                      card: Dict[str, Any]) -> WeightEntry:
    """Write the manifest entry ``name`` (``arch.tag``) for a weight just published, and register it with timm."""
    entry = WeightEntry(
        name=name, kind='se_zoo', repo_id=repo_id, revision=revision, filename=weights_file.name,
        sha256=file_sha256(weights_file), size=weights_file.stat().st_size,
        **{k: card[k] for k in ('source', 'recipe', 'license', 'metrics', 'eval_dataset') if card.get(k)},
        model_args=dict(config.get('model_args') or {}),
        pretrained_cfg={k: v for k, v in config.get('pretrained_cfg', {}).items() if k in CFG_FIELDS},
    )
    update_manifest({name: entry})  # validates the entry before the file is touched
    reload_manifest()
    return entry
