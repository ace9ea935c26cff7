"""The manifest of published se_zoo weights (``weights/manifest.json``) and the timm pretrained cfgs made from it.

One entry per ``arch.tag``, written by ``se_zoo.hub.push_folder(..., manifest_tag=TAG)`` (``se-zoo push --tag``)::

    "se_resnet50.ra_in1k": {
        "repo_id": "ORG/se_resnet50.ra_in1k",       # the Hub repo
        "revision": "<40-hex commit id>",            # pinned: a moved branch is never followed
        "filename": "model.safetensors",
        "sha256": "<64 hex>", "size": 112345678,     # checked before any tensor is loaded
        "source": "...", "recipe": "...",            # where the weights come from / how they were trained
        "license": "apache-2.0",
        "metrics": {"top1": 80.1}, "eval_dataset": "imagenet-1k",
        "model_args": {},                            # non-default constructor keywords of the weights
        "pretrained_cfg": {"input_size": [3, 224, 224], ...}   # preprocessing and head of the weights
    }

Adding a weight is one entry and no code change: each model module builds its ``default_cfgs`` through
``published_cfgs``, so a weight appears in ``timm.list_pretrained('se_*')`` with ``hf_hub_id='ORG/NAME@<commit>'``.
``SE_ZOO_WEIGHTS_MANIFEST`` points se_zoo at another manifest file (used by the tests); an entry is listed in
the shipped manifest only for weights that were really published.
"""
import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

__all__ = [
    'MANIFEST_PATH', 'MANIFEST_ENV', 'manifest_path', 'load_manifest', 'published_cfgs', 'find_published',
    'check_recordable', 'record_published', 'register_published', 'file_sha256',
]

MANIFEST_PATH = Path(__file__).parent / '_weights' / 'manifest.json'
MANIFEST_ENV = 'SE_ZOO_WEIGHTS_MANIFEST'

_PUBLIC_HUB = 'https://huggingface.co'
_COMMIT_RE = re.compile(r'^[0-9a-f]{40}$')
_SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_REQUIRED = ('repo_id', 'revision', 'filename', 'sha256', 'size')
# The pretrained_cfg fields that describe a weight's preprocessing and head (not its location).
_CFG_FIELDS = (
    'num_classes', 'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation',
    'crop_pct', 'test_crop_pct', 'crop_mode', 'mean', 'std', 'pool_size', 'test_pool_size', 'label_names',
)

# arch -> (its cfg without weights, the module's cfg factory): what register_published rebuilds cfgs from.
_ARCH_CFGS: Dict[str, Tuple[Dict[str, Any], Callable[..., Dict[str, Any]]]] = {}


def manifest_path() -> Path:
    """The manifest in use: ``$SE_ZOO_WEIGHTS_MANIFEST`` if set, else the one shipped with se_zoo."""
    return Path(os.environ.get(MANIFEST_ENV) or MANIFEST_PATH)


def _check_entry(name: str, entry: Dict[str, Any], path: Path) -> None:
    where = f'{path}: entry {name!r}'
    if name.count('.') != 1:
        raise ValueError(f'{where}: keys are "arch.tag"')
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise ValueError(f'{where} lacks {", ".join(missing)}')
    if not _COMMIT_RE.match(str(entry['revision'])):
        raise ValueError(f'{where}: revision {entry["revision"]!r} is not a commit id (40 hex); '
                         'a branch or tag name could move')
    if not _SHA256_RE.match(str(entry['sha256'])):
        raise ValueError(f'{where}: sha256 {entry["sha256"]!r} is not 64 lowercase hex digits')


def load_manifest(path: Optional[Union[str, Path]] = None) -> Dict[str, Dict[str, Any]]:
    """Every published weight, keyed ``arch.tag``, validated (pinned commit ids, well-formed sha256)."""
    path = Path(path) if path is not None else manifest_path()
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f'weights manifest {path} does not exist (set {MANIFEST_ENV} to an existing file)')
    except json.JSONDecodeError as e:
        raise ValueError(f'weights manifest {path} is not valid JSON: {e}') from e
    for name, entry in manifest.items():
        _check_entry(name, entry, path)
    return manifest


def _entry_cfg(entry: Dict[str, Any], make_cfg: Callable[..., Dict[str, Any]]) -> Dict[str, Any]:
    cfg = make_cfg(**{k: v for k, v in entry.get('pretrained_cfg', {}).items() if k in _CFG_FIELDS})
    cfg.update(hf_hub_id=f'{entry["repo_id"]}@{entry["revision"]}', hf_hub_filename=entry['filename'])
    if entry.get('license'):
        cfg['license'] = entry['license']
    notes = tuple(f'{k}: {entry[k]}' for k in ('source', 'recipe') if entry.get(k))
    if notes:
        cfg['notes'] = notes
    return cfg


def published_cfgs(
        arch_cfgs: Dict[str, Dict[str, Any]],
        make_cfg: Callable[..., Dict[str, Any]],
) -> Dict[str, Dict[str, Any]]:
    """Add one pretrained cfg per manifest entry whose architecture is in ``arch_cfgs``.

    Each cfg pins the weight's Hub revision in ``hf_hub_id`` (``org/name@commit``), so a moved branch is never
    followed; se_zoo's loader (``se_zoo.hub_fetch``) checks the file against the entry's sha256.
    """
    for arch, cfg in arch_cfgs.items():
        _ARCH_CFGS[arch] = (cfg, make_cfg)
    cfgs = dict(arch_cfgs)
    for name, entry in load_manifest().items():
        arch = name.split('.')[0]
        if arch in arch_cfgs:
            cfgs[name] = _entry_cfg(entry, make_cfg)
    return cfgs


def register_published(path: Optional[Union[str, Path]] = None) -> None:
    """(Re-)register every se_zoo architecture's pretrained cfgs with timm from the manifest at ``path``.

    Model modules read the manifest once, when imported; call this after the manifest changed (``push_folder``
    with a ``manifest_tag`` does) so that ``timm.create_model(..., pretrained=True)`` sees the new weights.
    """
    import sys
    from timm.models import generate_default_cfgs, model_entrypoint, register_model
    manifest = load_manifest(path)
    for arch, (base_cfg, make_cfg) in _ARCH_CFGS.items():
        cfgs = {arch: base_cfg}
        cfgs.update({name: _entry_cfg(e, make_cfg) for name, e in manifest.items() if name.split('.')[0] == arch})
        entrypoint = model_entrypoint(arch)
        module = sys.modules[entrypoint.__module__]
        module.default_cfgs[arch] = generate_default_cfgs(cfgs)[arch]
        with warnings.catch_warnings():
            # register_model warns when a name is registered again; replacing our own cfgs is the point here.
            warnings.simplefilter('ignore', UserWarning)
            register_model(entrypoint)


def find_published(repo_id: str, revision: Optional[str], filename: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """The manifest entry ``(arch.tag, entry)`` of a file at a pinned revision, or None if the manifest lacks it."""
    if not revision:
        return None
    for name, entry in load_manifest().items():
        if (entry['repo_id'], entry['revision'], entry['filename']) == (repo_id, revision, filename):
            return name, entry
    return None


def file_sha256(path: Union[str, Path]) -> str:
    """The sha256 of a file, read in chunks (huggingface_hub's own hashing, as the Hub computes LFS oids)."""
    from huggingface_hub.utils.sha import sha_fileobj
    with open(path, 'rb') as f:
        return sha_fileobj(f).hex()


def check_recordable(path: Optional[Union[str, Path]] = None) -> None:
    """Refuse to record a weight in the shipped manifest unless it is published on the real Hub.

    The shipped manifest is what every se_zoo user resolves ``pretrained=True`` against, so it may only name
    weights on https://huggingface.co; publishing to another endpoint (a mirror, a test server) needs a manifest
    of its own (``SE_ZOO_WEIGHTS_MANIFEST``).
    """
    from huggingface_hub import constants
    path = Path(path) if path is not None else manifest_path()
    if path.resolve() == MANIFEST_PATH.resolve() and constants.ENDPOINT != _PUBLIC_HUB:
        raise ValueError(f'the shipped weights manifest {MANIFEST_PATH} lists weights on {_PUBLIC_HUB} only, and '
                         f'HF_ENDPOINT is {constants.ENDPOINT}; set {MANIFEST_ENV} to a manifest of your own')


def record_published(
        name: str,
        *,
        repo_id: str,
        revision: str,
        weights_file: Union[str, Path],
        config: Dict[str, Any],
        card: Dict[str, Any],
        path: Optional[Union[str, Path]] = None,
) -> Dict[str, Any]:
    """Write the manifest entry ``name`` (``arch.tag``) for a weight just published, and register it with timm.

    The manifest file is rewritten atomically under a file lock, so concurrent publishers do not lose entries.
    """
    from filelock import FileLock
    from .hub import atomic_write_bytes
    path = Path(path) if path is not None else manifest_path()
    weights_file = Path(weights_file)
    model_args = {k: v for k, v in (config.get('model_args') or {}).items()
                  if k not in ('num_classes', 'in_chans', 'global_pool')}
    entry = {
        'repo_id': repo_id,
        'revision': revision,
        'filename': weights_file.name,
        'sha256': file_sha256(weights_file),
        'size': weights_file.stat().st_size,
        **{k: card[k] for k in ('source', 'recipe', 'license', 'metrics', 'eval_dataset') if card.get(k)},
        'model_args': model_args,
        'pretrained_cfg': {k: v for k, v in config.get('pretrained_cfg', {}).items() if k in _CFG_FIELDS},
    }
    _check_entry(name, entry, path)
    check_recordable(path)
    # The lock lives outside the checkout, so publishing leaves no stray file next to the manifest.
    lock_name = f'se_zoo_manifest_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()}.lock'
    lock = Path(tempfile.gettempdir()) / lock_name
    with FileLock(str(lock)):
        manifest = load_manifest(path) if path.exists() else {}
        manifest[name] = entry
        atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + '\n').encode())
    if path == manifest_path():
        register_published(path)
    return entry
