"""Size and cost of a model: parameters, FLOPs (torch.utils.flop_counter), SE share, feature maps."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import load_model, named_se_modules

__all__ = ['ModelProfile', 'profile_model']


@dataclass
class ModelProfile:
    """What ``se-zoo info`` reports. GMACs are FLOPs / 2 (one multiply-add = 2 FLOPs)."""
    name: str
    input_size: Tuple[int, int, int]
    params: int
    se_params: int
    gmacs: float
    se_gmacs: float
    features: List[Dict[str, Any]] = field(default_factory=list)
    has_weights: bool = False

    @property
    def se_param_share(self) -> float:
        return self.se_params / self.params

    @property
    def se_flop_share(self) -> float:
        return self.se_gmacs / self.gmacs


def profile_model(name: str, input_size: Optional[Tuple[int, int, int]] = None, **kwargs: Any) -> ModelProfile:
    """Build ``name`` and measure it at its default input size (or ``input_size``).

    FLOPs come from ``torch.utils.flop_counter``, which counts convolutions and matrix products; SE's
    pooling and channel multiply are element-wise and not counted, as in the paper's and timm's figures. The count
    depends on shapes alone, so the model is built and run on the meta device: no weights are allocated and no
    arithmetic is done, which keeps the largest networks (EfficientNet-L2 at 800 px) cheap to profile.
    """
    with torch.device('meta'):
        model = load_model(name, pretrained=False, **kwargs).eval()
    input_size = tuple(input_size or model.pretrained_cfg['input_size'])
    se_modules = dict(named_se_modules(model))
    params = sum(p.numel() for p in model.parameters())
    se_params = sum(p.numel() for m in se_modules.values() for p in m.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, *input_size, device='meta'))
    per_module = counter.get_flop_counts()
    total = sum(per_module.get('Global', {}).values())
    # get_flop_counts() keys modules by their fully qualified name, prefixed with the root's class name.
    # Count the SE's leaf modules (fc1, fc2): a block may call them through ``excite`` rather than the SE's forward.
    root = type(model).__name__
    se_leaves = {n for n, m in model.named_modules()
                 if any(n.startswith(se + '.') for se in se_modules) and not list(m.children())}
    se_flops = sum(sum(per_module.get(f'{root}.{n}', {}).values()) for n in se_leaves)
    return ModelProfile(
        name=name,
        input_size=input_size,
        params=params,
        se_params=se_params,
        gmacs=total / 2e9,
        se_gmacs=se_flops / 2e9,
        features=[dict(module=f['module'], num_chs=f['num_chs'], reduction=f['reduction']) for f in model.feature_info],
        has_weights=bool(timm.list_pretrained(name + '.*')),
    )
