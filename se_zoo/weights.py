"""The manifest of published se_zoo weights (``weights/manifest.json``) as timm pretrained cfgs."""
import json
from pathlib import Path
from typing import Any, Callable, Dict

__all__ = ['MANIFEST_PATH', 'load_manifest', 'published_cfgs']

MANIFEST_PATH = Path(__file__).parent / '_weights' / 'manifest.json'


def load_manifest() -> Dict[str, Dict[str, Any]]:
    """Every published weight, keyed ``arch.tag``."""
    return json.loads(MANIFEST_PATH.read_text())


def published_cfgs(arch_cfgs: Dict[str, Dict[str, Any]], make_cfg: Callable[..., Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Add one pretrained cfg per manifest entry whose architecture is in ``arch_cfgs``.

    The weight's Hub revision is pinned in ``hf_hub_id`` (``org/name@commit``), so a moved branch is never followed.
    """
    cfgs = dict(arch_cfgs)
    for name, entry in load_manifest().items():
        arch = name.split('.')[0]
        if arch in arch_cfgs:
            cfgs[name] = make_cfg(
                hf_hub_id=f'{entry["repo_id"]}@{entry["revision"]}',
                **entry.get('pretrained_cfg', {}),
            )
    return cfgs
