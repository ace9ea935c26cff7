"""The MobileNetV3 and EfficientNet V1/V2 lines: every SE-trained timm checkpoint has an se_zoo architecture.

Each row of ``weights/upstream/mbconv.csv`` names a timm source tag and the se_zoo architecture (with the row's
``model_args``) that loads it. Here: for every architecture beyond B0-B7 / V3-Large and Small 1.0, the mapped
state dict of timm's source network has exactly the se_zoo model's keys and shapes (on the meta device); for one
member of each new kind, the mapped weights give the source network's logits on real photos; and the two block
types new to se_zoo with SE inside (CondConv, EdgeResidual) pass timm's model checks in small versions.
"""
import csv
import json
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
import timm
import torch
from timm.layers import set_layer_config

import se_zoo  # noqa: F401  (registers the se_* architectures)
from se_zoo import SqueezeExcite
from se_zoo.models._pretrained import _ARCH_CFGS
from se_zoo.models._timm_compat import CondConvResidual, EdgeResidual, _gen_efficientnet_condconv, _gen_efficientnet_x
from se_zoo.models.se_efficientnet import _create_se_efficientnet
from se_zoo.state_dicts import pretrained_filter

from meta_shapes import meta_device

ROOT = Path(__file__).resolve().parents[1]
ROWS = list(csv.DictReader(open(ROOT / 'weights' / 'upstream' / 'mbconv.csv', newline='')))

NEW_ARCHS = (
    'se_mobilenet_v3_large_075', 'se_mobilenet_v3_small_050', 'se_mobilenet_v3_small_075', 'se_mobilenet_v3_rw',
    'se_mobilenet_v3_large_150d', 'se_efficientnet_b8', 'se_efficientnet_l2', 'se_efficientnet_b1_pruned',
    'se_efficientnet_b2_pruned', 'se_efficientnet_b3_pruned', 'se_efficientnet_x_b5', 'se_efficientnet_h_b5',
    'se_efficientnet_cc_b0_4e', 'se_efficientnet_cc_b0_8e', 'se_efficientnet_cc_b1_8e', 'se_efficientnetv2_rw_t',
    'se_efficientnetv2_rw_s', 'se_efficientnetv2_rw_m', 'se_efficientnetv2_b0', 'se_efficientnetv2_b1',
    'se_efficientnetv2_b2', 'se_efficientnetv2_b3', 'se_efficientnetv2_s', 'se_efficientnetv2_m',
    'se_efficientnetv2_l', 'se_efficientnetv2_xl',
)
TF_MODEL_ARGS = {'pad_type': 'same', 'bn_eps': 0.001}

# One source tag of each new kind, and the image size for the logit comparison.
KINDS = {
    'tf mobilenetv3': ('tf_mobilenetv3_small_075.in1k', 96),
    'mobilenetv3 width (fixed stem)': ('mobilenetv3_small_050.lamb_in1k', 96),
    'mobilenetv3_rw': ('mobilenetv3_rw.rmsp_in1k', 96),
    'efficientnetv2 rw': ('efficientnetv2_rw_t.ra2_in1k', 96),
    'efficientnetv2 tf': ('tf_efficientnetv2_b0.in1k', 96),
    'condconv': ('tf_efficientnet_cc_b0_4e.in1k', 96),
    'pruned': ('efficientnet_b1_pruned.in1k', 96),
    'efficientnet-x (edge residual with se)': ('efficientnet_x_b5.sw_r448_e450_in1k', 64),
}


def _model_args(row: Dict[str, str]) -> Dict[str, Any]:
    return json.loads(row['model_args']) if row['model_args'] else {}


def _row(source: str) -> Dict[str, str]:
    (row,) = [r for r in ROWS if r['source'] == source]
    return row


def _arch_sources() -> List[Tuple[str, str, str]]:
    """(se_zoo arch, timm source arch, model_args as JSON) of every new architecture, from its first row."""
    first: Dict[str, Tuple[str, str, str]] = {}
    for row in ROWS:
        if row['se_zoo_arch'] in NEW_ARCHS:
            first.setdefault(row['se_zoo_arch'], (
                row['se_zoo_arch'], row['source'].partition('.')[0], json.dumps(_model_args(row), sort_keys=True)))
    return list(first.values())


def test_rows_are_well_formed_and_tags_unique():
    names = [f'{r["se_zoo_arch"]}.{r["source"].partition(".")[2]}' for r in ROWS]
    assert len(names) == len(set(names))
    for row in ROWS:
        assert row['se_zoo_arch'] in timm.list_models('se_*'), row
        source_arch = row['source'].partition('.')[0]
        assert _model_args(row) == (TF_MODEL_ARGS if source_arch.startswith('tf_') else {}), row
        assert timm.models.get_pretrained_cfg(row['source']) is not None, row


def test_new_archs_are_registered():
    assert set(NEW_ARCHS) <= set(timm.list_models('se_*'))
    assert set(NEW_ARCHS) == {arch for arch, _, _ in _arch_sources()}


@pytest.mark.parametrize('arch,source_arch,model_args', _arch_sources())
def test_mapped_source_has_the_keys_and_shapes_of_the_se_zoo_model(arch, source_arch, model_args):
    with meta_device():
        source = timm.create_model(source_arch)
        model = timm.create_model(arch, **json.loads(model_args))
    mapped = pretrained_filter('timm')(source.state_dict(), model)
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in model.state_dict().items()}
    # se_zoo's SE sits wherever timm's does: the same number of SE layers, none left over from timm.
    assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == sum(
        type(m).__name__ == 'SqueezeExcite' for m in source.modules())


@pytest.mark.parametrize('arch,source_arch', [(a, s) for a, s, _ in _arch_sources()])
def test_arch_cfg_matches_the_source_cfg(arch, source_arch):
    ours, theirs = _ARCH_CFGS[arch], timm.models.get_pretrained_cfg(source_arch).to_dict()
    for key in ('input_size', 'test_input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std',
                'first_conv', 'classifier'):
        assert ours.get(key) == theirs.get(key), key


@pytest.mark.parametrize('kind', list(KINDS))
def test_mapped_weights_give_the_source_logits(kind, randomize_batchnorm, photo_batch, assert_same_logits):
    source_tag, size = KINDS[kind]
    row = _row(source_tag)
    torch.manual_seed(0)
    source = randomize_batchnorm(timm.create_model(source_tag.partition('.')[0])).eval()
    with meta_device():  # every tensor comes from the source: no initialisation to spend time on
        model = timm.create_model(row['se_zoo_arch'], **_model_args(row)).eval()
    model.load_state_dict(pretrained_filter(row['mapping'])(source.state_dict(), model), strict=True, assign=True)
    images = photo_batch(size, source)
    with torch.no_grad():
        expected, logits = source(images), model(images)
    assert_same_logits(logits, expected)
    assert expected.std().item() > 1e-3  # the comparison saw a network that computes something


def test_pruned_widths_reach_se_zoo_se_layers():
    with meta_device():
        full = timm.create_model('se_efficientnet_b1')
        pruned = timm.create_model('se_efficientnet_b1_pruned')
        source = timm.create_model('efficientnet_b1_pruned')
    se_widths = [m.fc1.out_channels for m in pruned.modules() if isinstance(m, SqueezeExcite)]
    assert se_widths != [m.fc1.out_channels for m in full.modules() if isinstance(m, SqueezeExcite)]
    assert se_widths == [m.conv_reduce.out_channels for m in source.modules() if hasattr(m, 'conv_reduce')]
    assert pruned.feature_info == source.feature_info
    assert pruned.num_features == source.num_features == pruned.classifier.in_features


def test_pruned_r_applies_to_the_unpruned_se_widths():
    # The checkpoint fixes every SE hidden width; a chosen r applies to the unpruned network's, as in B2.
    with meta_device():
        full = timm.create_model('se_efficientnet_b2', r=8)
        pruned = timm.create_model('se_efficientnet_b2_pruned', r=8)
    hidden = [m.fc1.out_channels for m in pruned.modules() if isinstance(m, SqueezeExcite)]
    assert hidden == [m.fc1.out_channels for m in full.modules() if isinstance(m, SqueezeExcite)]
    assert [m.fc1.in_channels for m in pruned.modules() if isinstance(m, SqueezeExcite)] != [
        m.fc1.in_channels for m in full.modules() if isinstance(m, SqueezeExcite)]


def test_pruned_features_only():
    model = timm.create_model('se_efficientnet_b1_pruned', features_only=True).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in out] == model.feature_info.channels() == [16, 12, 35, 67, 320]


# Small networks with each new SE-carrying block type, at half width and depth: CondConv (stages 5-7 of
# CondConv-B0) and EdgeResidual (stages 2-3 of EfficientNet-X; the B5 network is 30M parameters).
BLOCK_MODELS: Dict[type, Callable[..., torch.nn.Module]] = {
    CondConvResidual: partial(_create_se_efficientnet, 'se_efficientnet_cc_b0_4e',
                              generator=_gen_efficientnet_condconv, channel_multiplier=0.5, depth_multiplier=0.5),
    EdgeResidual: partial(_create_se_efficientnet, 'se_efficientnet_x_b5', generator=_gen_efficientnet_x,
                          channel_multiplier=0.5, depth_multiplier=0.5),
}


@pytest.fixture(scope='module', params=list(BLOCK_MODELS), ids=lambda c: c.__name__)
def block_type(request) -> type:
    return request.param


def test_new_block_carries_se_zoo_se(block_type):
    blocks = [m for m in BLOCK_MODELS[block_type]().modules() if isinstance(m, block_type)]
    assert blocks and all(isinstance(b.se, SqueezeExcite) for b in blocks)


def test_new_block_forward_backward(block_type, randomize_batchnorm):
    model = randomize_batchnorm(BLOCK_MODELS[block_type](drop_path_rate=0.1)).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1000)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_new_block_torchscript(block_type, randomize_batchnorm):
    with set_layer_config(scriptable=True):
        model = randomize_batchnorm(BLOCK_MODELS[block_type]()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x))


def test_new_block_features_only(block_type):
    model = BLOCK_MODELS[block_type]()
    features = BLOCK_MODELS[block_type](features_only=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = features(x)
    assert [f.shape[1] for f in out] == features.feature_info.channels()
    assert [64 // f.shape[-1] for f in out] == features.feature_info.reduction()
    assert features.feature_info.channels() == [f['num_chs'] for f in model.feature_info]
