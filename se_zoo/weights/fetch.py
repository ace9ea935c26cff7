"""Fetch pretrained weights from the Hugging Face Hub (or a release URL) and verify them before a single tensor is
loaded.

How this plugs into timm
------------------------
timm loads Hub weights inside ``build_model_with_cfg`` -> ``load_pretrained`` -> ``load_state_dict_from_hf``,
which downloads with ``hf_hub_download`` and loads at once: the Hub client checks only the size of a download,
so a corrupted or tampered file of the right size would be loaded silently. se_zoo therefore resolves the weight
source one step earlier, in its model entrypoints (``se_zoo.models._pretrained``), when ``pretrained=True``:

1. timm's own ``resolve_pretrained_cfg`` gives the cfg timm would use: a manifest cfg
   (``hf_hub_id='ORG/NAME@<commit>'``) or, for ``timm.create_model('hf-hub:ORG/NAME')``, the cfg timm read
   from the repo's config.json.
2. ``fetch_pretrained`` / ``fetch_weights`` download the file with ``hf_hub_download`` (so the Hub cache, file locks, progress bar,
   ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` all apply) and checks its sha256: against the manifest
   for pinned manifest weights, else against the sha256 the Hub reported for the LFS file (the cache names each
   blob by the ETag the Hub sent, which is the LFS sha256). A mismatch removes the cached copy and raises.
3. The verified cache path becomes the cfg's ``file`` (``source='file'``), and timm loads it as it loads any
   local weight file: safetensors via ``safetensors.torch.load_file``, then its usual classifier / ``in_chans``
   adaptation and strict ``load_state_dict``.

So timm does all the loading; se_zoo only decides *which file* and vouches for it. No timm function is patched.

URL files. A few upstream checkpoints (the original SE weights, converted from the authors' Caffe models) are
served by timm from GitHub release URLs, not the Hub. ``fetch_url`` downloads them with torch.hub's own downloader
into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``, where timm keeps them too) and verifies them before load:
against the manifest's full sha256 once pinned, else against the sha256 prefix the file name carries (torch.hub's
``check_hash`` convention). A file that fails is removed.

Pickle checkpoints (``pytorch_model.bin``, ``*.pth``) are read by timm with ``torch.load(weights_only=True)``, which
unpickles tensors and plain containers only. Those of the manifest are verified first; any other is never
downloaded unless the caller asks for it with ``with se_zoo.weights.fetch.allow_pickle(): ...``.
"""
import os
import re
import urllib.error
import urllib.parse
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    HfHubHTTPError, LocalEntryNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
)
from huggingface_hub.utils.sha import git_hash, sha_fileobj
from torch.hub import download_url_to_file, get_dir

try:  # huggingface_hub 2.x speaks HTTP through its own httpx fork, 1.x through httpx
    from httpx2 import ConnectError, ConnectTimeout, TransportError
except ImportError:
    from httpx import ConnectError, ConnectTimeout, TransportError

from ..errors import SEZooError
from ..version import __version__
from .manifest import SAFE_WEIGHTS_NAME, SHA256_RE, WeightEntry, load_manifest, url_hash_prefix

__all__ = [
    'SAFE_WEIGHTS_NAME', 'WeightsError', 'HubUnreachableError', 'WeightsNotFoundError', 'ChecksumMismatchError',
    'TruncatedDownloadError', 'PickleRefusedError', 'CONNECTION_ERRORS', 'allow_pickle', 'file_sha256', 'fetch_weights',
    'fetch_url', 'fetch_entry', 'fetch_pretrained', 'fetch_config', 'find_published',
]

PICKLE_SUFFIXES = ('.bin', '.pth', '.pt', '.ckpt', '.pkl', '.pth.tar')
# What timm falls back to when a repo has no model.safetensors, in timm's order.
_PICKLE_ALTERNATIVES = ('pytorch_model.bin', 'pytorch_model.pth', 'model.pth')
_GIT_SHA1_RE = re.compile(r'^[0-9a-f]{40}$')

# What the Hub client raises when no connection could be made (beside the OSErrors of sockets and DNS).
CONNECTION_ERRORS = (TransportError, OSError)

_pickle_allowed: ContextVar[bool] = ContextVar('se_zoo_pickle_allowed', default=False)


class WeightsError(SEZooError, RuntimeError):
    """Pretrained weights could not be fetched or verified; nothing was loaded."""


class HubUnreachableError(WeightsError):
    """The Hub could not be reached (or offline mode is on) and no cached copy exists."""


class WeightsNotFoundError(WeightsError):
    """The repo, revision or file does not exist on the Hub."""


class ChecksumMismatchError(WeightsError):
    """The downloaded file's sha256 is not the one expected; the cached copy was removed."""


class TruncatedDownloadError(WeightsError):
    """The download ended before the whole file arrived."""


class PickleRefusedError(WeightsError):
    """The weights exist only as a pickle, which se_zoo does not unpickle unless explicitly allowed."""


@contextmanager
def allow_pickle() -> Iterator[None]:
    """Allow pickle checkpoints (``.bin``/``.pth``) from the Hub within this block, loaded with ``weights_only=True``.

    Example::

        with se_zoo.weights.fetch.allow_pickle():
            model = timm.create_model('hf-hub:ORG/legacy_checkpoint', pretrained=True)
    """
    token = _pickle_allowed.set(True)
    try:
        yield
    finally:
        _pickle_allowed.reset(token)


def _is_pickle(filename: str) -> bool:
    return filename.endswith(PICKLE_SUFFIXES)


def _where(repo_id: str, revision: Optional[str], filename: str) -> str:
    return f'{filename} of {repo_id}@{revision or "main"}'


def _endpoint() -> str:
    return constants.ENDPOINT


def file_sha256(path: Union[str, Path]) -> str:
    """The sha256 of a file, read in chunks (huggingface_hub's own hashing, as the Hub computes LFS oids)."""
    with open(path, 'rb') as f:
        return sha_fileobj(f).hex()


def _unreachable(where: str) -> HubUnreachableError:
    return HubUnreachableError(
        f'cannot reach the Hub at {_endpoint()} (HF_ENDPOINT) to fetch {where}, and no cached copy exists; '
        'check the connection / HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use a populated cache')


def _check_connection(repo_id: str, filename: str, revision: Optional[str],
                      cache_dir: Optional[Union[str, Path]], where: str) -> None:
    """Fail at once when a file that is not cached cannot be fetched because no connection can be made.

    With no cached copy to fall back to, ``hf_hub_download`` retries network errors with backoff (about 23 s in
    huggingface_hub 2.x) before it gives up. An unknown host or a refused connection will not change in 23 s, so
    the file's metadata is asked for once first, without retries: no connection (or none within
    HF_HUB_ETAG_TIMEOUT) is the answer. Anything else, an HTTP answer (even a 5xx) or a failure that may pass
    (a read timeout), is left to ``hf_hub_download``, which retries it as the Hub client always does. A cached
    file needs no check: the client falls back to it.
    """
    if constants.is_offline_mode() or isinstance(try_to_load_from_cache(repo_id, filename, cache_dir, revision), str):
        return
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), timeout=constants.HF_HUB_ETAG_TIMEOUT,
                             library_name='se_zoo', library_version=__version__)
    except (ConnectError, ConnectTimeout) as e:
        raise _unreachable(where) from e
    except (HfHubHTTPError, TransportError):
        pass  # an answer, or a failure that may pass (a read timeout): hf_hub_download retries and reports it


def _download(repo_id: str, filename: str, revision: Optional[str], cache_dir: Optional[Union[str, Path]]) -> Path:
    """``hf_hub_download`` with its errors turned into ones that say what to do."""
    where = _where(repo_id, revision, filename)
    _check_connection(repo_id, filename, revision, cache_dir, where)
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    library_name='se_zoo', library_version=__version__))
    except RepositoryNotFoundError as e:
        raise WeightsNotFoundError(f'repo {repo_id} not found on {_endpoint()} (or private: set HF_TOKEN)') from e
    except RevisionNotFoundError as e:
        raise WeightsNotFoundError(f'revision {revision!r} not found in {repo_id} on {_endpoint()}') from e
    except RemoteEntryNotFoundError as e:
        raise WeightsNotFoundError(f'{where} not found on {_endpoint()}') from e
    except LocalEntryNotFoundError as e:
        # hf_hub_download reports a failed metadata request (and no cached copy) as LocalEntryNotFoundError,
        # caused by what went wrong: an HTTP error status, or no connection at all.
        status = getattr(getattr(e.__cause__, 'response', None), 'status_code', None)
        if status is not None:
            error = WeightsNotFoundError if status == 404 else WeightsError
            raise error(f'the Hub at {_endpoint()} (HF_ENDPOINT) answered {status} for {where}, and no cached copy '
                        'exists; ' + ('check that HF_ENDPOINT is a Hugging Face Hub' if status == 404 else
                                      'retry later, or set HF_HUB_OFFLINE=1 to use a populated cache')) from e
        if constants.is_offline_mode():
            raise HubUnreachableError(
                f'HF_HUB_OFFLINE=1 is set and {where} is not in the Hub cache '
                f'({cache_dir or constants.HF_HUB_CACHE}); unset HF_HUB_OFFLINE to download it once') from e
        raise _unreachable(where) from e
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else 'an error'
        raise WeightsError(f'the Hub at {_endpoint()} answered {status} for {where}; retry later') from e
    except OSError as e:
        if 'Consistency check failed' in str(e):
            raise TruncatedDownloadError(f'the download of {where} was truncated ({e}); nothing was cached, '
                                         'retry') from e
        raise


def _hub_reported_digest(path: Path) -> Tuple[str, str]:
    """The digest the Hub reported for a cached file, as (algorithm, hex).

    huggingface_hub stores each download as ``blobs/<etag>`` and the Hub's ETag of an LFS file is its sha256
    (of a regular git file, its git blob sha1), so the blob's name is what the Hub vouched for, known offline too.
    """
    etag = Path(os.path.realpath(path)).name
    if SHA256_RE.match(etag):
        return 'sha256', etag
    if _GIT_SHA1_RE.match(etag):
        return 'git-sha1', etag
    raise WeightsError(f'{path}: the Hub cache holds no digest for this file (blob name {etag!r}), so it cannot '
                       'be verified; list its sha256 in the weights manifest')


def _git_blob_sha1(path: Path) -> str:
    # Only regular (non-LFS) Hub files carry a git-sha1 ETag, and those are small enough to hash in memory.
    return git_hash(path.read_bytes())


def _discard(path: Path) -> None:
    """Remove a cached file (its snapshot link and the blob), so the next call downloads it again."""
    blob = Path(os.path.realpath(path))
    for p in (path, blob):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def fetch_weights(
        repo_id: str,
        *,
        revision: Optional[str] = None,
        filename: str = SAFE_WEIGHTS_NAME,
        sha256: Optional[str] = None,
        size: Optional[int] = None,
        cache_dir: Optional[Union[str, Path]] = None,
) -> Path:
    """Download one weight file from the Hub (or take it from the cache) and verify it.

    Args:
        repo_id: ``ORG/NAME``.
        revision: branch, tag or commit id; a commit id never follows a moved branch.
        filename: the file in the repo; pickle files need ``allow_pickle()``.
        sha256: the expected sha256 (from the manifest); if None, the sha256 the Hub reported for the file.
        size: the expected size in bytes, if known.
        cache_dir: the Hub cache to use instead of huggingface_hub's default.

    Returns:
        The path of the verified file in the Hub cache.

    Raises:
        PickleRefusedError, WeightsNotFoundError, HubUnreachableError, TruncatedDownloadError,
        ChecksumMismatchError (the cached copy is removed first), WeightsError.
    """
    where = _where(repo_id, revision, filename)
    if _is_pickle(filename) and not _pickle_allowed.get():
        raise PickleRefusedError(
            f'{where} is a pickle checkpoint; se_zoo loads safetensors only. If you trust the repo, load it '
            'inside `with se_zoo.weights.fetch.allow_pickle():` (torch.load with weights_only=True)')
    path = _download(repo_id, filename, revision, cache_dir)
    if sha256 is not None:
        algo, expected, against = 'sha256', sha256, 'the se_zoo weights manifest'
    else:
        (algo, expected), against = _hub_reported_digest(path), 'the digest the Hub reported'
    actual_size = path.stat().st_size
    actual = file_sha256(path) if algo == 'sha256' else _git_blob_sha1(path)
    if actual != expected or (size is not None and actual_size != size):
        _discard(path)
        raise ChecksumMismatchError(
            f'{where} failed verification against {against}: {algo} {actual} ({actual_size} bytes), expected '
            f'{expected}' + (f' ({size} bytes)' if size is not None else '') +
            '. The file is corrupted or was tampered with; nothing was loaded and the cached copy was removed, '
            'so the next attempt downloads it again')
    return path


def _pickle_fallback(repo_id: str, revision: Optional[str], cache_dir: Optional[Union[str, Path]]) -> Optional[str]:
    """The pickle checkpoint a repo without model.safetensors offers instead, if any."""
    if constants.is_offline_mode():
        return None
    for name in _PICKLE_ALTERNATIVES:
        try:
            if HfApi().file_exists(repo_id, name, revision=revision):
                return name
        except (HfHubHTTPError, OSError):  # the original "not found" is the error worth reporting
            return None
    return None


def fetch_url(
        url: str,
        *,
        sha256: Optional[str] = None,
        size: Optional[int] = None,
        cache_dir: Optional[Union[str, Path]] = None,
) -> Path:
    """Download a checkpoint from a URL (or take it from torch.hub's cache) and verify it.

    Args:
        url: the file's URL; its name is the cache file's name.
        sha256: the expected sha256 (a pinned manifest entry); if None, the sha256 prefix in the file's name
            (``NAME-<hex>.pth``, torch.hub's convention), which must then be there.
        size: the expected size in bytes, if known.
        cache_dir: the folder to keep the file in, instead of ``torch.hub.get_dir()/checkpoints``.

    Raises:
        WeightsError (no digest to verify against, a failed download), WeightsNotFoundError (404),
        HubUnreachableError (no connection, or ``HF_HUB_OFFLINE=1``, and no cached copy), ChecksumMismatchError
        (the cached copy is removed first).
    """
    name = Path(urllib.parse.urlparse(url).path).name
    prefix = None if sha256 is not None else url_hash_prefix(url)
    if sha256 is None and prefix is None:
        raise WeightsError(f'{url}: no sha256 to verify it against (its name carries no hash prefix); pin it in the '
                           'weights manifest with `se-zoo weights pin`')
    path = Path(cache_dir or Path(get_dir()) / 'checkpoints') / name
    if not path.is_file():
        if constants.is_offline_mode():
            raise HubUnreachableError(f'HF_HUB_OFFLINE=1 is set and {url} is not in the cache ({path.parent}); unset '
                                      'HF_HUB_OFFLINE to download it once')
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # torch.hub writes to a temporary file and renames it: a failed download leaves nothing behind
            download_url_to_file(url, str(path), progress=False)
        except urllib.error.HTTPError as e:
            error = WeightsNotFoundError if e.code == 404 else WeightsError
            raise error(f'{url} answered {e.code}; nothing was cached') from e
        except urllib.error.URLError as e:
            raise HubUnreachableError(f'cannot reach {url} ({e.reason}), and no cached copy exists in '
                                      f'{path.parent}') from e
    actual, actual_size = file_sha256(path), path.stat().st_size
    expected = sha256 or prefix
    if not actual.startswith(expected) or (size is not None and actual_size != size):
        _discard(path)
        against = 'the se_zoo weights manifest' if sha256 else 'the sha256 prefix in its name'
        raise ChecksumMismatchError(
            f'{url} failed verification against {against}: sha256 {actual} ({actual_size} bytes), expected '
            f'{expected}' + (f' ({size} bytes)' if size is not None else '') + '. The file is corrupted or was '
            'tampered with; nothing was loaded and the cached copy was removed')
    return path


def fetch_entry(entry: WeightEntry, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Fetch and verify the file of a manifest entry, held to its pin where it has one."""
    hub = entry.hub_file
    if hub is None:
        return fetch_url(entry.file_url, sha256=entry.sha256, size=entry.size, cache_dir=cache_dir)
    with allow_pickle():  # a listed file was chosen by the manifest, and is verified before timm reads it
        return fetch_weights(hub[0], revision=entry.revision, filename=hub[1], sha256=entry.sha256, size=entry.size,
                             cache_dir=cache_dir)


def find_published(repo_id: str, revision: Optional[str], filename: str) -> Optional[WeightEntry]:
    """The manifest entry for a Hub file at a revision (None: unpinned), or None if the manifest does not list it."""
    for entry in load_manifest().values():
        if entry.hub_file == (repo_id, filename) and entry.revision == (revision or None):
            return entry
    return None


def fetch_config(hf_hub_id: str, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Fetch the ``config.json`` of an ``ORG/NAME[@revision]`` repo into the Hub cache, with se_zoo's errors.

    ``timm.create_model('hf-hub:...')`` reads it first; fetching it here beforehand turns an unreachable Hub, an
    offline cache miss or a missing repo into one clear ``WeightsError`` instead of the Hub client's own.
    """
    repo_id, _, revision = hf_hub_id.partition('@')
    return _download(repo_id, 'config.json', revision or None, cache_dir)


def fetch_pretrained(
        hf_hub_id: str,
        filename: Optional[str] = None,
        cache_dir: Optional[Union[str, Path]] = None,
) -> Tuple[Path, Optional[WeightEntry]]:
    """Fetch and verify the Hub weight file a timm pretrained cfg names (``hf_hub_id`` = ``ORG/NAME[@revision]``).

    Returns the verified path and the manifest entry of the file, if the manifest lists it: a pinned entry is held
    to its sha256 and size, anything else to the digest the Hub reported. Without an explicit ``filename``, a repo
    that holds only a pickle checkpoint is used when ``allow_pickle()`` allows.
    """
    repo_id, _, revision = hf_hub_id.partition('@')
    revision = revision or None
    name = filename or SAFE_WEIGHTS_NAME
    published = find_published(repo_id, revision, name)
    sha256, size = (published.sha256, published.size) if published is not None else (None, None)
    try:
        path = fetch_weights(repo_id, revision=revision, filename=name, sha256=sha256, size=size, cache_dir=cache_dir)
    except WeightsNotFoundError:
        if filename:  # a file was named (manifest weights always name theirs): no substitute
            raise
        fallback = _pickle_fallback(repo_id, revision, cache_dir)
        if fallback is None:
            raise
        path = fetch_weights(repo_id, revision=revision, filename=fallback, cache_dir=cache_dir)
    return path, published
