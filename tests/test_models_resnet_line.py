"""The SE-ResNet line beyond the paper's five depths: ResNet-D/T stems, SENet-154, anti-aliased SE-ResNeXt,
ResNet-RS, timm's ByobNet ``-ts`` networks, and the original SENet weights in their own layout (``legacy``).

- Every upstream row of ``weights/upstream/resnet.csv`` whose source is an SE-trained timm checkpoint: on the
  meta device, the source architecture's state_dict, through the row's mapping, has exactly the keys and shapes
  of the se_zoo architecture built with the row's ``model_args`` (full-size networks, no weights).
- One representative per block or layout kind: timm's source network with random weights and randomised
  BatchNorm, mapped and loaded strictly, gives timm's logits on the photos; for the original-layout rows,
  dropping any one layout keyword changes the function (or the shapes), so each keyword is needed.
- timm's model checks (forward and backward, TorchScript, features_only against forward_intermediates) for the
  block and stem variants that the rest of the suite does not build.
Networks are built with one block per stage (``layers=(1, 1, 1, 1)``) and, where timm's constructor takes it,
at half width (``channels``); timm's ByobNet at a width factor.
"""
import csv
import json
from pathlib import Path
from typing import Any, Dict

import pytest
import timm
import torch
from timm.layers import set_layer_config

import se_zoo  # noqa: F401  (registers the se_* models)
from se_zoo.errors import InvalidArgumentError
from se_zoo.squeeze_excite import SqueezeExcite
from se_zoo.state_dicts import pretrained_filter

from meta_shapes import meta_device

UPSTREAM = Path(__file__).resolve().parents[1] / 'weights' / 'upstream' / 'resnet.csv'
TOLERANCE = 1e-5
SMALL = dict(layers=(1, 1, 1, 1))
NARROW = dict(layers=(1, 1, 1, 1), channels=(32, 64, 128, 256))


def _source_arch(source: str) -> str:
    return source.partition('.')[0]


def _upstream_rows():
    with open(UPSTREAM, newline='') as f:
        rows = [r for r in csv.DictReader(f) if r['kind'] == 'se-trained']
    # one case per (source architecture, se_zoo architecture, mapping, model_args): tags of one pair are alike
    cases = {(_source_arch(r['source']), r['se_zoo_arch'], r['mapping'], r['model_args']) for r in rows}
    return sorted(cases)


UPSTREAM_CASES = _upstream_rows()


def _mapped(source: torch.nn.Module, model: torch.nn.Module, mapping: str) -> Dict[str, torch.Tensor]:
    state_dict = source.state_dict()
    return state_dict if mapping == 'none' else pretrained_filter(mapping)(state_dict, model)


@pytest.mark.parametrize('source,arch,mapping,model_args', UPSTREAM_CASES,
                         ids=[f'{c[0]}-{c[1]}' for c in UPSTREAM_CASES])
def test_upstream_state_dict_maps_exactly(source, arch, mapping, model_args):
    with meta_device():
        reference = timm.create_model(source)
        model = timm.create_model(arch, **json.loads(model_args or '{}'))
    mapped = _mapped(reference, model, mapping)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected
    assert any(isinstance(m, SqueezeExcite) for m in model.modules())


# (timm source, se_zoo architecture, se_zoo model_args, mapping, constructor keywords for both)
EQUIVALENCE = {
    'senet154': ('senet154', 'se_senet154', {}, 'none', NARROW),
    'resnet_d': ('seresnet152d', 'se_resnet152d', {}, 'none', NARROW),
    'resnet_t': ('seresnext26t_32x4d', 'se_resnext26t_32x4d', {}, 'none', NARROW),
    'resnet_rs': ('resnetrs50', 'se_resnetrs50', {}, 'none', NARROW),
    'anti_aliased': ('seresnextaa101d_32x8d', 'se_resnextaa101d_32x8d', {}, 'none', NARROW),
    'byobnet_ts': ('seresnext26ts', 'se_resnext26ts', {}, 'none', dict(width_factor=0.5)),
    # timm's SENet class has fixed widths
    'legacy_basic': ('legacy_seresnet18', 'se_resnet18',
                     dict(stem_pool_ceil=True, act_before_se=True, rd_divisor=1), 'legacy', SMALL),
    'legacy_bottleneck': ('legacy_seresnet50', 'se_resnet50',
                          dict(stem_pool_ceil=True, stride_in_1x1=True), 'legacy', SMALL),
    'legacy_resnext': ('legacy_seresnext26_32x4d', 'se_resnext26_32x4d', dict(stem_pool_ceil=True), 'legacy',
                       SMALL),
    'legacy_senet154': ('legacy_senet154', 'se_senet154', dict(stem_pool_ceil=True), 'legacy', SMALL),
}
PHOTO_SIZE = 128


def _logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images)


@pytest.fixture(scope='module', params=sorted(EQUIVALENCE))
def source_pair(request, randomize_batchnorm, photo_batch):
    """A timm source network (random weights, randomised BN) and its logits on the photos, per layout kind."""
    source, arch, model_args, mapping, size_args = EQUIVALENCE[request.param]
    reference = randomize_batchnorm(timm.create_model(source, **size_args), seed=1).eval()
    images = photo_batch(PHOTO_SIZE, reference)
    return request.param, reference, images, _logits(reference, images)


def test_source_weights_give_identical_logits(source_pair, assert_same_logits):
    kind, reference, images, expected = source_pair
    _, arch, model_args, mapping, size_args = EQUIVALENCE[kind]
    model = timm.create_model(arch, **model_args, **size_args).eval()
    model.load_state_dict(_mapped(reference, model, mapping), strict=True)
    assert_same_logits(_logits(model, images), expected)
    # not vacuous: distinct, non-trivial logits per photo
    assert expected.std().item() > 1e-2 and not torch.allclose(expected[0], expected[1])


LEGACY_KINDS = sorted(kind for kind, case in EQUIVALENCE.items() if case[3] == 'legacy')


@pytest.mark.parametrize('source_pair', LEGACY_KINDS, indirect=True)
def test_each_legacy_keyword_is_needed(source_pair):
    kind, reference, images, expected = source_pair
    _, arch, model_args, mapping, size_args = EQUIVALENCE[kind]
    for dropped in model_args:
        model = timm.create_model(arch, **{k: v for k, v in model_args.items() if k != dropped}, **size_args).eval()
        try:
            model.load_state_dict(_mapped(reference, model, mapping), strict=True)
        except RuntimeError:  # e.g. rd_divisor: the SE widths no longer match
            continue
        diff = (_logits(model, images) - expected).abs().max().item()
        # far outside the equivalence tolerance (random weights keep the logits small)
        assert diff > 10 * TOLERANCE * max(1., expected.abs().max().item()), f'{kind}: {dropped} changed nothing'


# The new block code paths, small, for timm's model checks: the original basic block (ReLU before SE), the
# original bottleneck (stride in the 1x1 conv), both with the unpadded stem pool; the anti-aliased bottleneck;
# timm's ByobNet block around se_zoo's SE. (The stems and shortcuts of the other new networks are timm's
# ResNet code around the existing blocks.)
VARIANTS = {
    'legacy_basic': ('se_resnet18', dict(stem_pool_ceil=True, act_before_se=True, rd_divisor=1, **NARROW)),
    'legacy_bottleneck': ('se_resnet50', dict(stem_pool_ceil=True, stride_in_1x1=True, **NARROW)),
    'anti_aliased': ('se_resnextaa101d_32x8d', NARROW),
    'byobnet_ts': ('se_resnet33ts', dict(width_factor=0.25)),
}
SIZE = 64


def _input(batch_size: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_forward_backward(variant):
    arch, kwargs = VARIANTS[variant]
    model = timm.create_model(arch, num_classes=42, **kwargs).train()
    out = model(_input())
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without a gradient: {no_grad}'


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated')
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_torchscript_and_features_only(variant, randomize_batchnorm):
    arch, kwargs = VARIANTS[variant]
    with set_layer_config(scriptable=True):
        torch.manual_seed(0)
        model = randomize_batchnorm(timm.create_model(arch, **kwargs)).eval()
        # the same weights by the same initialisation (ByobNet's feature wrapper renames its stem keys)
        torch.manual_seed(0)
        features = randomize_batchnorm(timm.create_model(arch, features_only=True, **kwargs)).eval()
    x = _input()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        maps = features(x)
        _, intermediates = model.forward_intermediates(x)
    assert features.feature_info.channels() == [f['num_chs'] for f in model.feature_info]
    assert [m.shape[1] for m in maps] == features.feature_info.channels()
    for m, t in zip(maps, intermediates):
        torch.testing.assert_close(m, t)


def test_stem_pool_ceil_replaces_the_padded_pool():
    with meta_device():
        model = timm.create_model('se_resnet50', stem_pool_ceil=True)
    assert model.maxpool.ceil_mode and model.maxpool.padding == 0


def test_stride_in_1x1_moves_the_stride():
    with meta_device():
        model = timm.create_model('se_resnet50', stride_in_1x1=True)
    block = model.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert model.layer2[1].conv1.stride == (1, 1)


@pytest.mark.parametrize('arch,kwargs', [
    ('se_resnet18', dict(stride_in_1x1=True)),
    ('se_resnet50', dict(act_before_se=True)),
    ('se_resnetrs50', dict(stem_pool_ceil=True)),
    ('se_resnextaa101d_32x8d', dict(stride_in_1x1=True)),
])
def test_layout_keywords_reject_the_wrong_network(arch: str, kwargs: Dict[str, Any]):
    name = next(iter(kwargs))
    with pytest.raises(InvalidArgumentError, match=name):
        timm.create_model(arch, device='meta', **kwargs)
