"""The wrapper every se_zoo entrypoint wears: verified pretrained weights in, ``model.model_args`` out."""
import functools
from typing import Any, Callable

import torch.nn as nn

from ..hub_fetch import verified_pretrained_kwargs

__all__ = ['records_model_args']

# Keywords timm.create_model passes that describe loading or the head, not the architecture.
_NOT_MODEL_ARGS = frozenset({
    'pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir', 'num_classes', 'global_pool',
    'features_only', 'out_indices', 'feature_cls', 'feature_cfg', 'output_stride_features',
    'pretrained_strict', 'device', 'dtype', 'pretrained_model_args',
})


def records_model_args(entrypoint: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Wrap a model entrypoint so the model keeps its non-default constructor keywords as ``model.model_args``,
    and so ``pretrained=True`` loads only weights whose sha256 was verified first (``se_zoo.hub_fetch``).

    timm models do not remember their constructor keywords; publishing a model with, say, ``r=2`` or
    ``placement='post'`` must write them to config.json so that ``hf-hub:`` rebuilds the same architecture.
    """
    @functools.wraps(entrypoint)
    def create(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            # Fetch and verify the weights before the model exists (see se_zoo.hub_fetch); a manifest weight
            # may add the architecture keywords it was trained with.
            kwargs = verified_pretrained_kwargs(entrypoint.__name__, kwargs)
        model = entrypoint(pretrained, **kwargs)
        model.model_args = {k: v for k, v in kwargs.items() if k not in _NOT_MODEL_ARGS}
        return model

    return create
