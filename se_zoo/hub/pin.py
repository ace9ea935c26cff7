"""``se-zoo weights pin``: record the commit and sha256 that the Hub reports for manifest entries.

An unpinned entry (an upstream checkpoint listed by repo and file only) is verified at load against the sha256 the
Hub reports for the file, whatever the branch points at. Pinning asks the Hub, through ``huggingface_hub``, for the
branch's current commit and the file's LFS sha256 and size (a HEAD request, no download), and writes them into
the manifest: from then on a moved branch is never followed and any other file is refused. It is meant for a
maintainer who is online and has checked that the current files are the intended ones.
"""
from pathlib import Path
from typing import Dict, Iterable, Optional, Union

from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError

from ..errors import InvalidArgumentError
from ..models import reload_manifest
from .fetch import CONNECTION_ERRORS, HubUnreachableError, WeightsError
from .manifest import SHA256_RE, is_pinned, load_manifest, update_manifest

__all__ = ['pin_entries']



def pin_entries(names: Optional[Iterable[str]] = None, path: Optional[Union[str, Path]] = None,
                ) -> Dict[str, Dict[str, object]]:
    """Pin the manifest entries ``names`` (default: every unpinned one) to the Hub's current commit and sha256.

    Returns the updated entries. Nothing is written unless every entry could be resolved.
    """
    manifest = load_manifest(path)
    names = list(names) if names else [n for n, e in manifest.items() if not is_pinned(e)]
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise InvalidArgumentError(f'not in the weights manifest: {", ".join(unknown)} (see `se-zoo list --pretrained`)')
    changes = {}
    for name in names:
        entry = manifest[name]
        url = hf_hub_url(entry['repo_id'], entry['filename'])
        try:
            meta = get_hf_file_metadata(url)
        except HfHubHTTPError as e:
            raise WeightsError(f'{name}: the Hub answered {e} for {url}') from e
        except CONNECTION_ERRORS as e:
            raise HubUnreachableError(f'{name}: cannot reach the Hub for {url} ({e}); pinning needs the Hub') from e
        if not (meta.etag and SHA256_RE.match(meta.etag) and meta.commit_hash):
            raise WeightsError(f'{name}: the Hub reports no LFS sha256 and commit for {url}')
        changes[name] = dict(entry, revision=meta.commit_hash, sha256=meta.etag, size=meta.size)
    update_manifest(changes, path)
    reload_manifest(path)
    return changes
