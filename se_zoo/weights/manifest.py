"""The weights manifest (``weights/manifest.json``): one typed ``WeightEntry`` per ``arch.tag``, and the timm cfgs
made from them.

This module is data: it reads and writes the manifest and turns entries into timm pretrained cfgs. It knows nothing
of the Hub client or of the models. Two kinds of entry share the file:

- an **upstream** entry names a pretrained tag of the installed timm (``"timm_source": "seresnet50.ra2_in1k"``) and
  says only what timm's cfg of that tag does not: how its state dict becomes se_zoo's (``mapping``), the se_zoo
  constructor keywords it needs (``model_args``), the published top-1, the default flag and, once pinned, the file's
  digest. Where the file lives (timm's ``hf_hub_id``, or its ``url`` for the GitHub-release checkpoints), the
  preprocessing, the head and the licence are read from timm's own cfg, never copied::

      "se_resnet50.in1k": {
        "timm_source": "legacy_seresnet50.in1k", "kind": "se-trained", "mapping": "legacy",
        "model_args": {"stride_in_1x1": true, ...}, "metrics": {"top1": 77.65}, "eval_size": 224
      }

- an entry of se_zoo's own (published with ``se_zoo.hub.publish``) names its Hub repo and file (or a URL), and
  carries its own preprocessing (``pretrained_cfg``), licence and metrics, since no timm cfg describes it.

Pinning. A Hub file is pinned by ``revision`` (a commit id: a moved branch is never followed) and ``sha256`` (checked
before any tensor is loaded); a URL file by ``sha256`` alone (a release URL names one file). Unpinned, a Hub file is
held to the sha256 the Hub reports and a URL file to the sha256 prefix in its name (torch.hub's convention), until
``se-zoo weights pin`` records the full digest. ``SE_ZOO_WEIGHTS_MANIFEST`` points se_zoo at another manifest file.
"""
import dataclasses
import functools
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple, Union
from urllib.parse import urlparse

import timm
from filelock import FileLock

from ..errors import InvalidArgumentError, MissingFileError
from ..files import atomic_write_bytes

__all__ = [
    'MANIFEST_PATH', 'MANIFEST_ENV', 'KINDS', 'CFG_FIELDS', 'SHA256_RE', 'ManifestError', 'WeightEntry',
    'manifest_path', 'load_manifest', 'check_tag', 'published_cfgs', 'update_manifest', 'url_hash_prefix',
]

MANIFEST_PATH = Path(__file__).parent.parent / '_weights' / 'manifest.json'
MANIFEST_ENV = 'SE_ZOO_WEIGHTS_MANIFEST'

# How an entry's weights relate to the se_zoo architecture.
KINDS = ('se_zoo', 'se-trained', 'retrofit')
# The pretrained_cfg fields that describe a weight's preprocessing and head (not its location).
CFG_FIELDS = (
    'num_classes', 'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation',
    'crop_pct', 'test_crop_pct', 'crop_mode', 'mean', 'std', 'pool_size', 'test_pool_size', 'label_names',
)
SAFE_WEIGHTS_NAME = 'model.safetensors'
_COMMIT_RE = re.compile(r'^[0-9a-f]{40}$')
# A sha256 in hex: what the manifest pins, and the ETag the Hub gives an LFS file.
SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_TAG_RE = re.compile(r'^[a-z0-9][a-z0-9_]*$')
_REPO_RE = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')
# torch.hub's convention: a checkpoint named NAME-<first hex digits of its sha256>.EXT.
_URL_HASH_RE = re.compile(r'-([a-f0-9]{8,64})\.')


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


def url_hash_prefix(url: str) -> Optional[str]:
    """The sha256 prefix a checkpoint URL's file name carries (``se_resnet50-ce0d4300.pth``), if any."""
    match = _URL_HASH_RE.search(Path(urlparse(url).path).name)
    return match[1] if match else None


@dataclass(frozen=True)
class WeightEntry:
    """One weight of the manifest, ``arch.tag``: where its file is, how it is pinned, how it loads into se_zoo.

    Upstream entries (``timm_source`` set) take their location, preprocessing and licence from timm's cfg of that
    tag; se_zoo's own entries give ``repo_id``/``filename`` (or a ``url``) and their ``pretrained_cfg``.
    """
    name: str
    kind: str = 'se_zoo'
    mapping: str = 'none'  # a mapping of se_zoo.state_dicts.pretrained_filter
    model_args: Dict[str, Any] = field(default_factory=dict)
    timm_source: Optional[str] = None
    repo_id: Optional[str] = None
    filename: Optional[str] = None
    url: Optional[str] = None
    revision: Optional[str] = None
    sha256: Optional[str] = None
    size: Optional[int] = None
    license: Optional[str] = None
    source: Optional[str] = None  # free text, for se_zoo's own weights
    recipe: Optional[str] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    eval_size: Optional[int] = None
    eval_dataset: Optional[str] = None
    pretrained_cfg: Dict[str, Any] = field(default_factory=dict)
    default: bool = False

    @property
    def arch(self) -> str:
        return self.name.partition('.')[0]

    @property
    def tag(self) -> str:
        return self.name.partition('.')[2]

    @property
    def source_arch(self) -> Optional[str]:
        """The timm architecture the weights were trained in (upstream entries)."""
        return self.timm_source.partition('.')[0] if self.timm_source else None

    @property
    def pinned(self) -> bool:
        """Whether exactly one file can ever be loaded for this entry."""
        return self.sha256 is not None and (self.hub_file is None or self.revision is not None)

    @functools.cached_property
    def _timm_cfg(self) -> Dict[str, Any]:
        if not self.timm_source:
            return {}
        try:
            cfg = timm.models.get_pretrained_cfg(self.timm_source, allow_unregistered=False)
        except RuntimeError:  # timm raises for an unknown tag of a known architecture (None: unknown architecture)
            cfg = None
        if cfg is None:
            raise ManifestError(f'entry {self.name!r}: timm {timm.__version__} has no pretrained tag '
                                f'{self.timm_source!r}')
        return cfg.to_dict()

    @property
    def hub_file(self) -> Optional[Tuple[str, str]]:
        """``(repo_id, filename)`` of a Hub file, or None for a URL file."""
        repo_id = self.repo_id or (None if self.url else self._timm_cfg.get('hf_hub_id'))
        if not repo_id:
            return None
        return repo_id, self.filename or self._timm_cfg.get('hf_hub_filename') or SAFE_WEIGHTS_NAME

    @property
    def file_url(self) -> Optional[str]:
        """The download URL of a file that is not on the Hub (``url``, or timm's), else None."""
        return None if self.hub_file else self.url or self._timm_cfg.get('url') or None

    @property
    def file_name(self) -> str:
        """The weight file's name: ``model.safetensors``, or a URL checkpoint's ``*.pth``."""
        hub = self.hub_file
        return hub[1] if hub else Path(urlparse(self.file_url or '').path).name

    @property
    def is_pickle(self) -> bool:
        """Whether the file is a pickle checkpoint (read with ``torch.load(weights_only=True)``)."""
        return not self.file_name.endswith('.safetensors')

    @property
    def resolved_license(self) -> Optional[str]:
        return self.license or self._timm_cfg.get('license')

    @property
    def location(self) -> Tuple[Optional[str], Optional[str]]:
        """``(hf_hub_id, url)`` as this weight's timm cfg states them: a pinned Hub file names its commit
        (``org/name@commit``, which timm accepts); a URL file has no ``hf_hub_id``."""
        hub = self.hub_file
        if hub is None:
            return None, self.file_url
        return hub[0] + (f'@{self.revision}' if self.revision else ''), None

    def where(self) -> str:
        """The file, for messages: ``FILE of ORG/NAME`` or the URL."""
        hub = self.hub_file
        return f'{hub[1]} of {hub[0]}' if hub else str(self.file_url)

    def cfg(self, arch_cfg: Dict[str, Any]) -> Dict[str, Any]:
        """The timm pretrained cfg of this weight: the architecture's cfg, the weights' preprocessing and location."""
        upstream = {k: v for k, v in self._timm_cfg.items() if k in CFG_FIELDS and v is not None}
        cfg = dict(arch_cfg, **upstream, **self.pretrained_cfg)
        hf_hub_id, url = self.location
        if hf_hub_id:
            cfg.update(hf_hub_id=hf_hub_id, hf_hub_filename=self.hub_file[1])
        else:
            cfg['url'] = url
        if self.resolved_license:
            cfg['license'] = self.resolved_license
        notes = [f'source: timm {self.timm_source}' if self.timm_source else f'source: {self.source}'] \
            if self.timm_source or self.source else []
        if self.recipe:
            notes.append(f'recipe: {self.recipe}')
        if self.kind == 'retrofit':
            notes.append('SE is untrained: inserted as an exact identity into the source network, to be fine-tuned')
        if self.is_pickle:
            notes.append('a pickle checkpoint, read with torch.load(weights_only=True) after verification')
        if not self.pinned:
            notes.append('unpinned: verified against the sha256 the Hub reports (a URL file: the sha256 prefix in '
                         'its name), until `se-zoo weights pin`')
        cfg['notes'] = tuple(notes)
        return cfg

    def to_json(self) -> Dict[str, Any]:
        """The entry as the manifest stores it: every field that differs from its default."""
        defaults = WeightEntry(name=self.name)
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != 'name' and getattr(self, f.name) != getattr(defaults, f.name)}

    @classmethod
    def from_json(cls, name: str, data: Dict[str, Any], where: Union[str, Path] = 'manifest') -> 'WeightEntry':
        """Parse and validate one manifest entry (``ManifestError`` names the file and the entry)."""
        prefix = f'{where}: entry {name!r}'
        if not isinstance(data, dict):
            raise ManifestError(f'{prefix} must be a JSON object')
        known = {f.name for f in dataclasses.fields(cls)} - {'name'}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ManifestError(f'{prefix} has unknown fields {unknown}; known: {", ".join(sorted(known))}')
        entry = cls(name=name, **data)
        try:
            entry.check()
        except ManifestError as e:
            raise ManifestError(f'{prefix}: {e}') from None
        return entry

    def check(self) -> None:
        """Raise ``ManifestError`` unless this is a well-formed entry."""
        arch, dot, tag = self.name.partition('.')
        if not arch or not dot:
            raise ManifestError('keys are "arch.tag"')
        try:
            check_tag(tag)
        except InvalidArgumentError as e:
            raise ManifestError(str(e)) from None
        if self.kind not in KINDS:
            raise ManifestError(f'kind {self.kind!r} is not one of {", ".join(KINDS)}')
        if not isinstance(self.model_args, dict) or not isinstance(self.pretrained_cfg, dict):
            raise ManifestError('model_args and pretrained_cfg are JSON objects')
        unknown_cfg = set(self.pretrained_cfg) - set(CFG_FIELDS)
        if unknown_cfg:
            raise ManifestError(f'pretrained_cfg has unknown fields {sorted(unknown_cfg)}')
        if self.timm_source:
            if self.repo_id or self.url or self.pretrained_cfg:
                raise ManifestError('an upstream entry (timm_source) takes its location and preprocessing from '
                                    "timm's cfg: give no repo_id, url or pretrained_cfg")
            self._timm_cfg  # noqa: B018  (resolves the tag: an unknown one is refused here)
        elif bool(self.repo_id) == bool(self.url):
            raise ManifestError('give timm_source (an upstream weight), or repo_id or url (a weight of se_zoo\'s own)')
        hub = self.hub_file
        if hub is None and not self.file_url:
            raise ManifestError(f'timm\'s cfg of {self.timm_source} names neither a Hub repo nor a URL')
        if hub is not None and not _REPO_RE.match(hub[0]):
            raise ManifestError(f'repo_id {hub[0]!r} is not ORG/NAME')
        if self.revision is not None and not _COMMIT_RE.match(str(self.revision)):
            raise ManifestError(f'revision {self.revision!r} is not a commit id (40 hex); a branch or tag name '
                                'could move')
        if self.sha256 is not None and not SHA256_RE.match(str(self.sha256)):
            raise ManifestError(f'sha256 {self.sha256!r} is not 64 lowercase hex digits')
        if hub is not None and (self.revision is None) != (self.sha256 is None):
            raise ManifestError('give both revision and sha256 (pinned) or neither (unpinned)')
        if hub is None and self.revision is not None:
            raise ManifestError('a URL file is pinned by its sha256 alone; it has no revision')


def load_manifest(path: Optional[Union[str, Path]] = None) -> Dict[str, WeightEntry]:
    """Every weight in the manifest at ``path`` (default: ``manifest_path()``), keyed ``arch.tag``, validated."""
    path = Path(path) if path is not None else manifest_path()
    return dict(_load(path.resolve(), *_stamp(path)))


def _stamp(path: Path) -> Tuple[int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise MissingFileError(f'weights manifest {path} does not exist (set {MANIFEST_ENV} to an existing file)')
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int, size: int) -> Dict[str, WeightEntry]:
    # Parsed once per file version: every pretrained load consults the manifest, and entries are immutable.
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f'weights manifest {path} is not valid JSON: {e}') from e
    if not isinstance(manifest, dict):
        raise ManifestError(f'weights manifest {path} must hold a JSON object keyed "arch.tag"')
    entries = {name: WeightEntry.from_json(name, data, path) for name, data in manifest.items()}
    _check_single_defaults(entries, path)
    return entries


def published_cfgs(
        arch_cfgs: Dict[str, Dict[str, Any]],
        manifest: Optional[Dict[str, WeightEntry]] = None,
) -> Dict[str, Dict[str, Any]]:
    """The ``generate_default_cfgs`` input of a model family: each architecture's cfg and one cfg per weight.

    An architecture's default tag (the entry marked ``default``) comes first, as timm takes the first tag with
    weights as the default; the others follow in name order.
    """
    manifest = load_manifest() if manifest is None else manifest
    ordered = sorted(manifest.values(), key=lambda e: (not e.default, e.name))
    cfgs = {}
    for arch, cfg in arch_cfgs.items():
        tagged = {e.name: e.cfg(cfg) for e in ordered if e.arch == arch}
        cfgs.update(tagged or {arch: cfg})
    return cfgs


def update_manifest(changes: Dict[str, WeightEntry], path: Optional[Union[str, Path]] = None,
                    remove: Iterable[str] = ()) -> Dict[str, WeightEntry]:
    """Add or replace the entries ``changes`` (and drop ``remove``) in the manifest at ``path``; return it.

    Every entry is validated before the file is touched. The file is rewritten atomically under a file lock, so
    concurrent writers do not lose entries; the lock lives in the temp dir, so no stray file sits in a checkout.
    """
    path = Path(path) if path is not None else manifest_path()
    for name, entry in changes.items():
        if entry.name != name:
            raise ManifestError(f'{path}: entry {entry.name!r} filed under {name!r}')
        try:
            entry.check()
        except ManifestError as e:
            raise ManifestError(f'{path}: entry {name!r}: {e}') from None
    lock_name = f'se_zoo_manifest_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()}.lock'
    with FileLock(str(Path(tempfile.gettempdir()) / lock_name)):
        manifest = load_manifest(path) if path.exists() else {}
        for name in remove:
            manifest.pop(name, None)
        manifest.update(changes)
        _check_single_defaults(manifest, path)
        data = {name: manifest[name].to_json() for name in sorted(manifest)}
        atomic_write_bytes(path, (json.dumps(data, indent=1) + '\n').encode())
    return manifest


def _check_single_defaults(manifest: Dict[str, WeightEntry], path: Path) -> None:
    seen: Dict[str, str] = {}
    for name, entry in manifest.items():
        if entry.default:
            if entry.arch in seen:
                raise ManifestError(f'{path}: {seen[entry.arch]} and {name} are both marked default for {entry.arch}')
            seen[entry.arch] = name
