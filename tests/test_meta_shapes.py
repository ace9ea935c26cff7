"""tests/meta_shapes.py's shortcut gives the meta device's shapes and keys, and keeps BatchNorm's width check."""
from typing import Any, Tuple

import pytest
import timm
import torch
import torch.nn as nn

import se_zoo  # noqa: F401  (registers the se_zoo networks)
from meta_shapes import shapes_only


def _shapes(name: str) -> Tuple[Any, ...]:
    model = timm.create_model(name, device='meta').eval()
    x = torch.empty(2, 3, 96, 96, device='meta')
    return ({k: (v.shape, v.dtype) for k, v in model.state_dict().items()},
            [t.shape for t in model.forward_intermediates(x)[1]], model(x).shape)


@pytest.mark.parametrize('name', ['se_resnet50', 'se_efficientnet_b0', 'se_inception_v3'])
def test_shapes_only_gives_what_the_meta_device_gives(name):
    plain = _shapes(name)
    with shapes_only():
        assert _shapes(name) == plain


def test_a_batch_norm_of_another_width_still_fails():
    batch_norm = nn.BatchNorm2d(8, device='meta').eval()
    with shapes_only(), pytest.raises(RuntimeError, match='running_mean should contain 4 elements'):
        batch_norm(torch.empty(2, 4, 5, 5, device='meta'))


def test_real_tensors_are_left_alone():
    torch.manual_seed(0)
    with shapes_only():
        layer = nn.Conv2d(3, 4, 3)
        batch_norm = nn.BatchNorm2d(4).train()
        out = batch_norm(layer(torch.ones(2, 3, 5, 5)))
    assert layer.weight.std() > 0 and batch_norm.running_mean.abs().sum() > 0
    assert out.shape == (2, 4, 3, 3)
