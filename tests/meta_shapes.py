"""``shapes_only()`` and ``meta_device()``: meta-device builds and forwards for shape and key checks, without what
they cannot read.

A meta tensor has a shape and no data, yet torch still runs a network's weight initialisation and its BatchNorm
layers on it, through Python decompositions of each op (``torch._refs``), and those are most of the time a meta
build or forward takes. Neither can change a shape: an initialiser fills its tensor in place, and BatchNorm in eval
mode returns a tensor like its input. Inside ``shapes_only()`` those calls on meta tensors return at once
(BatchNorm after the width check it would make itself). Every other op, and every op on real tensors, runs as
torch runs it, so a shape or key error anywhere else still raises; tests/test_meta_shapes.py holds it to the
plain meta device's shapes and keys.
"""
import contextlib
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# The in-place fills that weight initialisers (torch.nn.init's and timm's trunc_normal_) are made of; each is
# answered only when its other arguments are numbers, so an in-place op between two tensors keeps its checks.
_FILLS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_, torch.Tensor.fill_,
                    torch.Tensor.erfinv_, torch.Tensor.mul_, torch.Tensor.add_, torch.Tensor.clamp_})


def _tensors(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> List[torch.Tensor]:
    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]


def _eval_batch_norm_that_fits(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> bool:
    """F.batch_norm(input, running_mean, running_var, weight, bias, training, ...) in eval mode, with C values in
    each per-channel tensor: the call the shortcut may answer (any other raises or updates, as torch does it)."""
    bound = dict(zip(('input', 'running_mean', 'running_var', 'weight', 'bias', 'training'), args), **kwargs)
    per_channel = [bound.get(k) for k in ('running_mean', 'running_var', 'weight', 'bias')]
    return not bound.get('training', False) and all(
        t.numel() == bound['input'].shape[1] for t in per_channel if isinstance(t, torch.Tensor))


class _ShapesOnly(TorchFunctionMode):
    def __torch_function__(self, func: Callable, types: Any, args: Tuple[Any, ...] = (),
                           kwargs: Dict[str, Any] = None) -> Any:
        kwargs = kwargs or {}
        tensors = _tensors(args, kwargs)
        if tensors and tensors[0].is_meta:
            first = tensors[0]
            if getattr(func, '__module__', None) == 'torch.nn.init' or (func in _FILLS and len(tensors) == 1):
                return first
            if func is F.batch_norm and _eval_batch_norm_that_fits(args, kwargs):
                return torch.empty_like(first)
        return func(*args, **kwargs)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Within this context, weight initialisers and BatchNorm on meta tensors skip their Python decompositions."""
    with _ShapesOnly():
        yield


@contextlib.contextmanager
def meta_device() -> Iterator[None]:
    """Build on the meta device (``torch.device('meta')`` as the default device) under ``shapes_only()``."""
    with torch.device('meta'), shapes_only():
        yield
