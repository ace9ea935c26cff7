"""``se-zoo weights pin``: record the digest (and, for a Hub file, the commit) of manifest entries.

An unpinned entry is verified at load against the sha256 the Hub reports for the file (a Hub file) or the sha256
prefix in its name (a URL file). Pinning records the full digest, so that exactly one file can ever be loaded:

- a Hub file: the branch's current commit and the file's LFS sha256 and size, asked of the Hub through
  ``huggingface_hub`` (a HEAD request, no download); from then on a moved branch is never followed;
- a URL file: its sha256 and size, computed from the file itself, downloaded (or taken from the cache) and first
  checked against the prefix its name carries.

It is meant for a maintainer who is online and has checked that the current files are the intended ones. Pinning
writes the manifest only; the caller re-registers the cfgs (``se_zoo.models.reload_manifest``) if it wants the
running process to see the pins.
"""
import dataclasses
from pathlib import Path
from typing import Dict, Iterable, Optional, Union

from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError

from ..errors import InvalidArgumentError, did_you_mean
from .fetch import CONNECTION_ERRORS, HubUnreachableError, WeightsError, fetch_url, file_sha256
from .manifest import SHA256_RE, WeightEntry, load_manifest, update_manifest

__all__ = ['pin_entries']


def _pinned(entry: WeightEntry) -> WeightEntry:
    hub = entry.hub_file
    if hub is None:
        path = fetch_url(entry.file_url)  # held to the prefix in its name before its digest is recorded
        return dataclasses.replace(entry, sha256=file_sha256(path), size=path.stat().st_size)
    url = hf_hub_url(*hub)
    try:
        meta = get_hf_file_metadata(url)
    except HfHubHTTPError as e:
        raise WeightsError(f'{entry.name}: the Hub answered {e} for {url}') from e
    except CONNECTION_ERRORS as e:
        raise HubUnreachableError(f'{entry.name}: cannot reach the Hub for {url} ({e}); pinning needs the Hub') from e
    if not (meta.etag and SHA256_RE.match(meta.etag) and meta.commit_hash):
        raise WeightsError(f'{entry.name}: the Hub reports no LFS sha256 and commit for {url}')
    return dataclasses.replace(entry, revision=meta.commit_hash, sha256=meta.etag, size=meta.size)


def pin_entries(names: Optional[Iterable[str]] = None, path: Optional[Union[str, Path]] = None,
                ) -> Dict[str, WeightEntry]:
    """Pin the manifest entries ``names`` (default: every unpinned one); return the pinned entries.

    Nothing is written unless every entry could be resolved.
    """
    manifest = load_manifest(path)
    names = list(names) if names else [n for n, e in manifest.items() if not e.pinned]
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise InvalidArgumentError(f'not in the weights manifest: {", ".join(unknown)}'
                                   f'{did_you_mean(unknown[0], manifest, " (see `se-zoo list --pretrained`)")}')
    changes = {name: _pinned(manifest[name]) for name in names}
    update_manifest(changes, path)
    return changes
