"""Sizes against the paper and timm, the paper's ablations as keyword arguments, and clear errors on bad input.

Sizes are measured with ``se_zoo.profile.profile_model`` (torch.utils.flop_counter; GMACs = FLOPs / 2).
Parameter-only checks build on the meta device, which allocates no memory for the weights.
"""
from typing import Callable, List

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import make_divisible

import se_zoo
from se_zoo import SqueezeExcite
from se_zoo.profile import profile_model

# One model per family (and per SE-building path: V1 and V2 use EfficientNet's class, V3 its own).
FAMILY_MODELS = ('se_resnet18', 'se_mobilenet_v1_100', 'se_mobilenet_v2_050', 'se_mobilenet_v3_small_100',
                 'se_efficientnet_b0')
# The paper's SE-ResNet-50 parameter counts for each reduction ratio r (Table 10).
PAPER_PARAMS_BY_R = {2: 45.7e6, 4: 35.7e6, 8: 30.7e6, 16: 28.1e6, 32: 26.9e6}


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _se_modules(model: nn.Module) -> List[SqueezeExcite]:
    return [m for m in model.modules() if isinstance(m, SqueezeExcite)]


def _meta_model(name: str, **kwargs) -> nn.Module:
    return timm.create_model(name, device='meta', **kwargs)


# --- sizes ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def se_resnet50_profile():
    return profile_model('se_resnet50')


def test_se_resnet50_size_matches_paper_and_timm(se_resnet50_profile):
    profile = se_resnet50_profile
    assert profile.input_size == (3, 224, 224)
    assert profile.params == pytest.approx(28.09e6, rel=0.01)
    assert profile.gmacs == pytest.approx(4.09, rel=0.01)  # timm seresnet50 (ResNet-B); the paper's 3.87 is Caffe layout
    assert profile.params == _num_params(timm.create_model('seresnet50', device='meta'))


def test_profile_se_share(se_resnet50_profile):
    """SE's cost as profile_model reports it: the FC layers' parameters and multiply-adds (on a 1x1 map)."""
    ses = _se_modules(timm.create_model('se_resnet50', device='meta'))
    assert se_resnet50_profile.se_params == sum(_num_params(se) for se in ses)
    fc_macs = sum(se.fc1.in_channels * se.fc1.out_channels + se.fc2.in_channels * se.fc2.out_channels for se in ses)
    assert se_resnet50_profile.se_gmacs == pytest.approx(fc_macs / 1e9)
    assert 0.08 < se_resnet50_profile.se_param_share < 0.1  # the paper's ~10% (2.5M of 28.1M)


@pytest.fixture(scope='module')
def mobilenet_v1_profile():
    return profile_model('se_mobilenet_v1_100')


def test_se_mobilenet_v1_gmacs_match_paper(mobilenet_v1_profile):
    assert mobilenet_v1_profile.gmacs == pytest.approx(0.572, rel=0.01)


def test_se_mobilenet_v1_params_near_paper(mobilenet_v1_profile):
    """4.587M against the paper's 4.7M (2.4% under): se_zoo's SE sits after the depthwise conv, on the block input
    width (timm's DepthwiseSeparableConv placement), where the paper's figure implies SE on the pointwise output.
    Everything but the SE blocks is timm's MobileNetV1 (4.23M), so the gap is the placement alone."""
    plain = _num_params(timm.create_model('mobilenetv1_100', device='meta'))
    assert mobilenet_v1_profile.params == plain + mobilenet_v1_profile.se_params
    assert mobilenet_v1_profile.params == pytest.approx(4.7e6, rel=0.03)


@pytest.mark.parametrize('r', sorted(PAPER_PARAMS_BY_R))
def test_reduction_ratio_params_match_paper(r):
    assert _num_params(_meta_model('se_resnet50', r=r)) == pytest.approx(PAPER_PARAMS_BY_R[r], rel=0.02)


def test_se_stages_without_last_stage_costs_about_four_percent():
    """The paper: dropping SE from the last stage cuts SE-ResNet-50's parameter overhead to ~4%."""
    plain = _num_params(timm.create_model('resnet50', device='meta'))
    overhead = _num_params(_meta_model('se_resnet50', se_stages=(1, 2, 3))) / plain - 1
    assert 0.03 < overhead < 0.05


# --- placement ----------------------------------------------------------------------------------------------

def _reference_se(se: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    """The default SE (average squeeze, ReLU, sigmoid) written out with se's own weights."""
    s = x.mean((2, 3), keepdim=True)
    s = F.conv2d(F.relu(F.conv2d(s, se.fc1.weight, se.fc1.bias)), se.fc2.weight, se.fc2.bias)
    return x * torch.sigmoid(s)


def _reference_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual branch of a timm BasicBlock / Bottleneck in eval mode (drop_block and aa are identities)."""
    if hasattr(block, 'conv3'):
        x = block.act1(block.bn1(block.conv1(x)))
        x = block.act2(block.bn2(block.conv2(x)))
        return block.bn3(block.conv3(x))
    x = block.act1(block.bn1(block.conv1(x)))
    return block.bn2(block.conv2(x))


def _reference_block(block: nn.Module, x: torch.Tensor, placement: str) -> torch.Tensor:
    """Fig. 5 of the paper, composed from the block's own layers."""
    act = F.relu
    shortcut = x if block.downsample is None else block.downsample(x)
    if placement == 'standard':
        return act(_reference_se(block.se, _reference_branch(block, x)) + shortcut)
    if placement == 'pre':
        return act(_reference_branch(block, _reference_se(block.se, x)) + shortcut)
    if placement == 'post':
        return act(_reference_se(block.se, _reference_branch(block, x) + shortcut))
    if placement == 'identity':
        return act(_reference_branch(block, x) + _reference_se(block.se, shortcut))
    raise AssertionError(placement)


@pytest.mark.parametrize('name', ['se_resnet18', 'se_resnet50'])
@pytest.mark.parametrize('placement', ['standard', 'pre', 'post', 'identity'])
def test_placement_computes_paper_figure(name, placement, randomize_batchnorm):
    model = randomize_batchnorm(timm.create_model(name, placement=placement)).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stem = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        first = model.layer1[0](stem)
        # layer1[1] has an identity shortcut, layer2[0] a strided projection shortcut.
        for block, block_in in ((model.layer1[1], first), (model.layer2[0], model.layer1(stem))):
            in_chs, out_chs = block.conv1.in_channels, block.bn2.num_features if name == 'se_resnet18' else block.bn3.num_features
            assert block.se.fc1.in_channels == (in_chs if placement == 'pre' else out_chs)
            expected = _reference_block(block, block_in.clone(), placement)
            block_in_before = block_in.clone()
            torch.testing.assert_close(block(block_in), expected)
            assert torch.equal(block_in, block_in_before), 'the block wrote into its input'


def test_placements_differ(randomize_batchnorm):
    """Guards the test above: the four placements are four different functions of the same weights."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    state = randomize_batchnorm(timm.create_model('se_resnet18', placement='standard')).state_dict()
    outputs = []
    for placement in ('standard', 'post', 'identity'):  # 'pre' has other SE widths, so other weights
        model = timm.create_model('se_resnet18', placement=placement).eval()
        model.load_state_dict(state)
        with torch.no_grad():
            outputs.append(model(x))
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            assert not torch.allclose(outputs[i], outputs[j])


def test_pre_placement_uses_block_input_width():
    model = _meta_model('se_resnet50', placement='pre')
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            assert block.se.fc1.in_channels == block.conv1.in_channels
            assert block.se.fc1.out_channels == make_divisible(block.conv1.in_channels / 16, 8)


# --- per-stage selection ------------------------------------------------------------------------------------

@pytest.mark.parametrize('se_stages', [(3,), (1, 4), (2, 3, 4)])
def test_se_stages_leave_other_stages_plain(se_stages):
    model = _meta_model('se_resnet50', se_stages=se_stages)
    for i, stage in enumerate((model.layer1, model.layer2, model.layer3, model.layer4), start=1):
        with_se = [block.se is not None for block in stage]
        assert all(with_se) if i in se_stages else not any(with_se)
        assert bool(_se_modules(stage)) == (i in se_stages)


def test_plain_stage_is_timm_resnet_stage(randomize_batchnorm):
    """A stage without SE computes what timm's plain resnet50 stage computes with the same weights."""
    model = randomize_batchnorm(timm.create_model('se_resnet50', se_stages=(3,))).eval()
    plain = timm.create_model('resnet50').eval()
    plain.layer2.load_state_dict(model.layer2.state_dict(), strict=True)
    x = torch.randn(2, 256, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.layer2(x), plain.layer2(x))


# --- SE keywords take effect in every family ----------------------------------------------------------------

@pytest.mark.parametrize('name', FAMILY_MODELS)
def test_r_changes_reduced_width(name):
    default = _se_modules(_meta_model(name))
    halved = _se_modules(_meta_model(name, r=2 * _default_r(name)))
    doubled = _se_modules(_meta_model(name, r=_default_r(name) / 2))
    assert len(default) == len(halved) == len(doubled) > 0
    widths = [se.fc1.out_channels for se in default]
    assert all(s.fc1.out_channels <= w for s, w in zip(halved, widths))
    assert all(s.fc1.out_channels >= w for s, w in zip(doubled, widths))
    assert sum(s.fc1.out_channels for s in doubled) > sum(widths) > sum(s.fc1.out_channels for s in halved)


def _default_r(name: str) -> int:
    return 16 if name.startswith(('se_resnet', 'se_mobilenet_v1')) else 4


def test_r_is_exact_in_resnet():
    for r in (4, 16, 32):
        for se in _se_modules(_meta_model('se_resnet50', r=r)):
            assert se.fc1.out_channels == make_divisible(se.fc1.in_channels / r, 8)


def test_efficientnet_reduces_block_input_channels():
    """EfficientNet's SE width is the block *input* channels / r (rd_divisor 1), as in timm."""
    model = _meta_model('se_efficientnet_b0', r=8)
    for stage in model.blocks:
        for block in stage:
            in_chs = block.conv_pw.in_channels if hasattr(block, 'conv_pwl') else block.conv_dw.in_channels
            assert block.se.fc1.out_channels == make_divisible(in_chs / 8, 1)


SQUEEZES = {
    'avg': lambda x: x.mean((2, 3), keepdim=True),
    'max': lambda x: x.amax((2, 3), keepdim=True),
    'avgmax': lambda x: 0.5 * (x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True)),
}
GATES = {'sigmoid': torch.sigmoid, 'hard_sigmoid': F.hardsigmoid, 'tanh': torch.tanh, 'relu': F.relu}
ACTS = {'relu': F.relu, 'silu': F.silu, 'gelu': F.gelu}


def _assert_every_se_is(model: nn.Module, squeeze: Callable, gate: Callable, act: Callable, bias: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    ses = _se_modules(model)
    assert ses
    for se in ses:
        assert (se.fc1.bias is not None) == bias and (se.fc2.bias is not None) == bias
        x = torch.randn(2, se.fc1.in_channels, 5, 5, generator=generator)
        s = F.conv2d(act(F.conv2d(squeeze(x), se.fc1.weight, se.fc1.bias)), se.fc2.weight, se.fc2.bias)
        with torch.no_grad():
            torch.testing.assert_close(se(x), x * gate(s))


@pytest.mark.parametrize('name', FAMILY_MODELS)
@pytest.mark.parametrize('squeeze', ['max', 'avgmax'])
def test_squeeze_kwarg(name, squeeze):
    model = timm.create_model(name, squeeze=squeeze, gate='sigmoid', se_act='relu')
    _assert_every_se_is(model, SQUEEZES[squeeze], torch.sigmoid, F.relu, bias=True)


@pytest.mark.parametrize('name', FAMILY_MODELS)
@pytest.mark.parametrize('gate', ['sigmoid', 'hard_sigmoid', 'tanh', 'relu'])
def test_gate_kwarg(name, gate):
    model = timm.create_model(name, gate=gate, se_act='relu')
    _assert_every_se_is(model, SQUEEZES['avg'], GATES[gate], F.relu, bias=True)


@pytest.mark.parametrize('name', FAMILY_MODELS)
@pytest.mark.parametrize('se_act', ['silu', 'gelu'])
def test_se_act_kwarg(name, se_act):
    model = timm.create_model(name, se_act=se_act, gate='sigmoid')
    _assert_every_se_is(model, SQUEEZES['avg'], torch.sigmoid, ACTS[se_act], bias=True)


@pytest.mark.parametrize('name', FAMILY_MODELS)
def test_se_bias_kwarg(name):
    model = timm.create_model(name, se_bias=False, gate='sigmoid', se_act='relu')
    _assert_every_se_is(model, SQUEEZES['avg'], torch.sigmoid, F.relu, bias=False)
    se_biases = sum(se.fc1.out_channels + se.fc2.out_channels for se in _se_modules(model))
    assert _num_params(model) == _num_params(_meta_model(name)) - se_biases


@pytest.mark.parametrize('name,gate,act', [
    ('se_resnet50', torch.sigmoid, F.relu),
    ('se_mobilenet_v3_large_100', F.hardsigmoid, F.relu),
    ('se_efficientnet_b0', torch.sigmoid, F.silu),
])
def test_family_default_se(name, gate, act):
    """The defaults are each family's published SE (paper; MobileNetV3; EfficientNet)."""
    _assert_every_se_is(timm.create_model(name), SQUEEZES['avg'], gate, act, bias=True)


# --- clear errors -------------------------------------------------------------------------------------------

def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"'se_resnet51' is neither a model.*did you mean se_resnet50"):
        se_zoo.load_model('se_resnet51')


@pytest.mark.parametrize('name', FAMILY_MODELS)
@pytest.mark.parametrize('kwargs,match', [
    (dict(r=0), r'r=0 must be a positive number'),
    (dict(r=-4), r'r=-4 must be a positive number'),
    (dict(gate='swish'), r"gate='swish' is not supported; allowed values are sigmoid, hard_sigmoid, tanh, relu"),
    (dict(squeeze='median'), r"squeeze='median' is not supported; allowed values are avg, max, avgmax"),
    (dict(se_act='nope'), r"se_act='nope' is not supported; allowed values are relu"),
])
def test_bad_se_kwargs(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model(name, **kwargs)


@pytest.mark.parametrize('se_stages', [(0,), (1, 5), 3, ('layer1',)])
def test_bad_se_stages(se_stages):
    with pytest.raises(ValueError, match=r'se_stages=.* must be a sequence of stage indices from \(1, 2, 3, 4\)'):
        timm.create_model('se_resnet50', se_stages=se_stages)


@pytest.mark.parametrize('name', ['se_mobilenet_v2_050', 'se_mobilenet_v3_small_100', 'se_efficientnet_b0'])
@pytest.mark.parametrize('kwargs', [dict(placement='pre'), dict(se_stages=(1,))])
def test_resnet_only_kwargs_are_refused_by_mbconv_families(name, kwargs):
    with pytest.raises(ValueError, match=rf'{next(iter(kwargs))}: only se_resnet\* models take this'):
        timm.create_model(name, device='meta', **kwargs)


def test_bad_placement():
    with pytest.raises(ValueError, match=r"placement='middle' is not supported; allowed values are standard, pre, post, identity"):
        timm.create_model('se_resnet50', placement='middle')


@pytest.mark.parametrize('name', ['se_resnet18', 'se_mobilenet_v3_small_100', 'se_efficientnet_b0'])
def test_wrong_input_channels_at_forward(name):
    model = timm.create_model(name).eval()
    with pytest.raises(RuntimeError, match='channels'):  # torch's conv check, before any output
        model(torch.randn(1, 1, 64, 64))
