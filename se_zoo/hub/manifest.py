"""The weights manifest (``weights/manifest.json``): one entry per ``arch.tag``, and the timm cfgs made from it.

This module is pure data: it reads and writes the manifest and turns entries into timm pretrained cfgs. It
knows nothing of the Hub client or of the models. An entry::

    "se_resnet50.ra2_in1k": {
        "repo_id": "timm/seresnet50.ra2_in1k",  # the Hub repo holding the file
        "filename": "model.safetensors",
        "revision": "<40-hex commit id>",        # pinned: a moved branch is never followed   } both or neither:
        "sha256": "<64 hex>", "size": 112345678, # checked before any tensor is loaded       } unpinned entries
        "kind": "se-trained",                    # se-trained | retrofit (SE inserted as an exact identity)
        "source": "timm seresnet50.ra2_in1k",    # where the weights come from
        "source_arch": "seresnet50",             # the architecture they were trained in
        "mapping": "timm",                       # how its state dict becomes se_zoo's (se_zoo.state_dicts)
        "model_args": {},                        # se_zoo constructor keywords the weights need
        "license": "apache-2.0",
        "metrics": {"top1": 80.26, "top5": 95.07}, "eval_size": 224, "eval_dataset": "imagenet-1k",
        "pretrained_cfg": {"input_size": [3, 224, 224], ...},  # the weights' preprocessing and head
        "default": true                          # the arch's default tag (at most one per arch)
    }

An entry without ``revision``/``sha256`` is verified against the sha256 the Hub reports for the file, like an
``hf-hub:`` load, until ``se-zoo weights pin`` records both. ``SE_ZOO_WEIGHTS_MANIFEST`` points se_zoo at
another manifest file.
"""
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple, Union

from filelock import FileLock

from ..errors import InvalidArgumentError, MissingFileError
from ..files import atomic_write_bytes

__all__ = [
    'MANIFEST_PATH', 'MANIFEST_ENV', 'KINDS', 'MAPPINGS', 'CFG_FIELDS', 'SHA256_RE', 'ManifestError', 'manifest_path',
    'load_manifest', 'check_entry', 'check_tag', 'is_pinned', 'entry_cfg', 'published_cfgs', 'find_entry',
    'update_manifest',
]

MANIFEST_PATH = Path(__file__).parent.parent / '_weights' / 'manifest.json'
MANIFEST_ENV = 'SE_ZOO_WEIGHTS_MANIFEST'

# How an entry's weights relate to the se_zoo architecture.
KINDS = ('se_zoo', 'se-trained', 'retrofit')
# How a source state dict becomes se_zoo's (the functions live in se_zoo.state_dicts).
MAPPINGS = ('none', 'timm', 'torchvision', 'senet', 'retrofit')
# The pretrained_cfg fields that describe a weight's preprocessing and head (not its location).
CFG_FIELDS = (
    'num_classes', 'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation',
    'crop_pct', 'test_crop_pct', 'crop_mode', 'mean', 'std', 'pool_size', 'test_pool_size', 'label_names',
)
_REQUIRED = ('repo_id', 'filename')
_COMMIT_RE = re.compile(r'^[0-9a-f]{40}$')
# A sha256 in hex: what the manifest pins, and the ETag the Hub gives an LFS file.
SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_TAG_RE = re.compile(r'^[a-z0-9][a-z0-9_]*$')
_REPO_RE = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')


class ManifestError(InvalidArgumentError):
    """A manifest file or entry that se_zoo cannot use; the message names the file and the entry."""


def manifest_path() -> Path:
    """The manifest in use: ``$SE_ZOO_WEIGHTS_MANIFEST`` if set, else the one shipped with se_zoo."""
    return Path(os.environ.get(MANIFEST_ENV) or MANIFEST_PATH)


def check_tag(tag: str) -> str:
    """``tag`` if it is a valid weight tag (lower-case letters, digits, underscores), else raise."""
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise InvalidArgumentError(
            f'weight tag {tag!r} is not valid: use lower-case letters, digits and underscores, starting with a '
            'letter or digit (e.g. ra2_in1k)')
    return tag


def check_entry(name: str, entry: Dict[str, Any], where: Union[str, Path] = 'manifest') -> None:
    """Raise ``ManifestError`` unless ``entry`` is a well-formed manifest entry named ``arch.tag``."""
    prefix = f'{where}: entry {name!r}'
    arch, dot, tag = name.partition('.')
    if not arch or not dot:
        raise ManifestError(f'{prefix}: keys are "arch.tag"')
    try:
        check_tag(tag)
    except InvalidArgumentError as e:
        raise ManifestError(f'{prefix}: {e}') from None
    missing = [k for k in _REQUIRED if not entry.get(k)]
    if missing:
        raise ManifestError(f'{prefix} lacks {", ".join(missing)}')
    if not _REPO_RE.match(str(entry['repo_id'])):
        raise ManifestError(f'{prefix}: repo_id {entry["repo_id"]!r} is not ORG/NAME')
    revision, sha256 = entry.get('revision'), entry.get('sha256')
    if (revision is None) != (sha256 is None):
        raise ManifestError(f'{prefix}: give both revision and sha256 (pinned) or neither (unpinned)')
    if revision is not None and not _COMMIT_RE.match(str(revision)):
        raise ManifestError(f'{prefix}: revision {revision!r} is not a commit id (40 hex); a branch or tag name '
                            'could move')
    if sha256 is not None and not SHA256_RE.match(str(sha256)):
        raise ManifestError(f'{prefix}: sha256 {sha256!r} is not 64 lowercase hex digits')
    if entry.get('kind', 'se_zoo') not in KINDS:
        raise ManifestError(f'{prefix}: kind {entry["kind"]!r} is not one of {", ".join(KINDS)}')
    if entry.get('mapping', 'none') not in MAPPINGS:
        raise ManifestError(f'{prefix}: mapping {entry["mapping"]!r} is not one of {", ".join(MAPPINGS)}')
    unknown_cfg = set(entry.get('pretrained_cfg') or {}) - set(CFG_FIELDS)
    if unknown_cfg:
        raise ManifestError(f'{prefix}: pretrained_cfg has unknown fields {sorted(unknown_cfg)}')


def is_pinned(entry: Dict[str, Any]) -> bool:
    """Whether the entry names a commit and a sha256, so that exactly one file can ever be loaded for it."""
    return entry.get('revision') is not None and entry.get('sha256') is not None


def load_manifest(path: Optional[Union[str, Path]] = None) -> Dict[str, Dict[str, Any]]:
    """Every weight in the manifest at ``path`` (default: ``manifest_path()``), keyed ``arch.tag``, validated."""
    path = Path(path) if path is not None else manifest_path()
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f'weights manifest {path} does not exist (set {MANIFEST_ENV} to an existing file)')
    except json.JSONDecodeError as e:
        raise ManifestError(f'weights manifest {path} is not valid JSON: {e}') from e
    if not isinstance(manifest, dict):
        raise ManifestError(f'weights manifest {path} must hold a JSON object keyed "arch.tag"')
    for name, entry in manifest.items():
        check_entry(name, entry, path)
    _check_single_defaults(manifest, path)
    return manifest


def entry_cfg(entry: Dict[str, Any], arch_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The timm pretrained cfg of a manifest entry: the architecture's cfg, the weights' preprocessing and location.

    A pinned entry names its commit in ``hf_hub_id`` (``org/name@commit``); timm accepts that form.
    """
    cfg = dict(arch_cfg, **(entry.get('pretrained_cfg') or {}))
    revision = entry.get('revision')
    cfg.update(hf_hub_id=entry['repo_id'] + (f'@{revision}' if revision else ''),
               hf_hub_filename=entry['filename'])
    if entry.get('license'):
        cfg['license'] = entry['license']
    notes = [f'{k}: {entry[k]}' for k in ('source', 'recipe') if entry.get(k)]
    if entry.get('kind') == 'retrofit':
        notes.append('SE is untrained: inserted as an exact identity into the source network, to be fine-tuned')
    if not is_pinned(entry):
        notes.append('unpinned: verified against the sha256 the Hub reports, until `se-zoo weights pin`')
    if notes:
        cfg['notes'] = tuple(notes)
    return cfg


def published_cfgs(
        arch_cfgs: Dict[str, Dict[str, Any]],
        manifest: Optional[Dict[str, Dict[str, Any]]] = None,
) -> Dict[str, Dict[str, Any]]:
    """The ``generate_default_cfgs`` input of a model family: each architecture's cfg and one cfg per weight.

    An architecture's default tag (the entry marked ``default``) comes first, as timm takes the first tag with
    weights as the default; the others follow in name order.
    """
    manifest = load_manifest() if manifest is None else manifest
    ordered = sorted(manifest.items(), key=lambda item: (not item[1].get('default'), item[0]))
    cfgs = {}
    for arch, cfg in arch_cfgs.items():
        tagged = {name: entry_cfg(entry, cfg) for name, entry in ordered if name.partition('.')[0] == arch}
        cfgs.update(tagged or {arch: cfg})
    return cfgs


def find_entry(repo_id: str, revision: Optional[str], filename: str,
               manifest: Optional[Dict[str, Dict[str, Any]]] = None) -> Optional[Tuple[str, Dict[str, Any]]]:
    """The manifest entry ``(arch.tag, entry)`` for a file at a revision (None: unpinned), or None if unlisted."""
    manifest = load_manifest() if manifest is None else manifest
    for name, entry in manifest.items():
        if (entry['repo_id'], entry.get('revision'), entry['filename']) == (repo_id, revision or None, filename):
            return name, entry
    return None


def update_manifest(changes: Dict[str, Dict[str, Any]], path: Optional[Union[str, Path]] = None,
                    remove: Iterable[str] = ()) -> Dict[str, Dict[str, Any]]:
    """Add or replace the entries ``changes`` (and drop ``remove``) in the manifest at ``path``; return it.

    Every entry is validated before the file is touched. The file is rewritten atomically under a file lock, so
    concurrent writers do not lose entries; the lock lives in the temp dir, so no stray file sits in a checkout.
    """
    path = Path(path) if path is not None else manifest_path()
    for name, entry in changes.items():
        check_entry(name, entry, path)
    lock_name = f'se_zoo_manifest_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()}.lock'
    with FileLock(str(Path(tempfile.gettempdir()) / lock_name)):
        manifest = load_manifest(path) if path.exists() else {}
        for name in remove:
            manifest.pop(name, None)
        manifest.update(changes)
        _check_single_defaults(manifest, path)
        manifest = {name: manifest[name] for name in sorted(manifest)}
        atomic_write_bytes(path, (json.dumps(manifest, indent=2) + '\n').encode())
    return manifest


def _check_single_defaults(manifest: Dict[str, Dict[str, Any]], path: Path) -> None:
    seen: Dict[str, str] = {}
    for name, entry in manifest.items():
        arch = name.partition('.')[0]
        if entry.get('default'):
            if arch in seen:
                raise ManifestError(f'{path}: {seen[arch]} and {name} are both marked default for {arch}')
            seen[arch] = name
