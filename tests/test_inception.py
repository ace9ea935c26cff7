"""SE-Inception-v3/v4 and SE-Inception-ResNet-v2: timm's networks with one SE per Inception module (or on each
Inception-ResNet block's residual branch), the identity retrofit of timm's checkpoints and ``add_se``, both bit for
bit, and the refusal of networks that already have SE.

Sources are timm's own architectures with random weights and randomised BatchNorm statistics, run on the skimage
photos at 107 px (timm's Inception networks accept down to 75 px; at 107 every max-pool still pools 3x3 windows).
"""
import copy
import csv
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from se_zoo import SqueezeExcite, add_se
from se_zoo.errors import InvalidArgumentError
from se_zoo.models import named_se_modules
from se_zoo.retrofit import name_as_se_zoo_architecture
from se_zoo.state_dicts import pretrained_filter, retrofit_state_dict

from meta_shapes import meta_device

# timm architecture -> the modules that carry SE in its se_zoo counterpart, in forward order
SE_MODULES = {
    'inception_v3': ['Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e',
                     'Mixed_7a', 'Mixed_7b', 'Mixed_7c'],
    'inception_v4': [f'features.{i}' for i in range(6, 22)],
    'inception_resnet_v2': ([f'repeat.{i}' for i in range(10)] + [f'repeat_1.{i}' for i in range(20)]
                            + [f'repeat_2.{i}' for i in range(9)] + ['block8']),
}
# The modules whose max-pool branch passes halved channels on, and the module that reads them.
POOL_THROUGH = {'inception_v3': {'Mixed_6a': 'Mixed_6b', 'Mixed_7a': 'Mixed_7b'},
                'inception_v4': {'features.10': 'features.11', 'features.18': 'features.19'},
                'inception_resnet_v2': {}}
SIZE = 107
CSV_PATH = Path(__file__).resolve().parents[1] / 'weights' / 'upstream' / 'inception.csv'


def _meta(name: str, **kwargs) -> torch.nn.Module:
    with meta_device():
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize('arch', SE_MODULES)
def test_state_dict_is_timms_plus_one_se_per_module(arch):
    plain, se = _meta(arch), _meta(f'se_{arch}')
    plain_sd, se_sd = plain.state_dict(), se.state_dict()
    assert {k: se_sd[k].shape for k in plain_sd} == {k: v.shape for k, v in plain_sd.items()}
    assert [n for n, _ in named_se_modules(se)] == [f'{m}.se' for m in SE_MODULES[arch]]
    added = sorted(set(se_sd) - set(plain_sd))
    assert added == sorted(f'{m}.se.{fc}.{p}' for m in SE_MODULES[arch] for fc in ('fc1', 'fc2')
                           for p in ('weight', 'bias'))
    # each SE sees the whole module output (Inception) or the residual branch (Inception-ResNet): r=16, multiple of 8
    for name in SE_MODULES[arch]:
        module = se.get_submodule(name)
        width = module.conv2d.out_channels if hasattr(module, 'conv2d') else plain.get_submodule(name)(
            torch.empty(1, module.in_channels(), 17, 17, device='meta')).shape[1]
        assert module.se.fc1.in_channels == width
        assert module.se.fc1.out_channels == max(8, int(width / 16 + 4) // 8 * 8)


@pytest.mark.parametrize('arch', SE_MODULES)
def test_se_keywords_reach_every_se(arch):
    model = _meta(f'se_{arch}', r=4, rd_divisor=1, squeeze='max', gate='hard_sigmoid', se_bias=False)
    ses = [m for _, m in named_se_modules(model)]
    assert len(ses) == len(SE_MODULES[arch])
    for se in ses:
        assert se.fc1.out_channels == round(se.fc1.in_channels / 4) and se.fc1.bias is None
        assert se.squeeze.pool_type == 'fastmax' and type(se.gate) is torch.nn.Hardsigmoid


@pytest.mark.parametrize('arch', SE_MODULES)
def test_pretrained_cfg_is_timms(arch):
    # the bare name's cfg is its default tag's, the most accurate retrofit: gluon's for v3, TF's for the others
    ours = timm.models.get_pretrained_cfg(f'se_{arch}').to_dict()
    source = {'inception_v3': 'gluon_in1k'}.get(arch, 'tf_in1k')
    assert ours['tag'] == f'{source}_retrofit'
    theirs = timm.models.get_pretrained_cfg(f'{arch}.{source}').to_dict()
    for field in ('input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'first_conv',
                  'classifier', 'num_classes'):
        assert ours[field] == theirs[field], field
    assert ours['paper_ids'] == 'arXiv:1709.01507'
    model = _meta(f'se_{arch}').eval()
    smallest = ours['min_input_size'][-1]
    assert model(torch.empty(1, 3, smallest, smallest, device='meta')).shape == (1, 1000)
    with pytest.raises(RuntimeError):
        model(torch.empty(1, 3, smallest - 1, smallest - 1, device='meta'))


@pytest.mark.parametrize('arch', SE_MODULES)
def test_retrofit_and_add_se_are_the_same_exact_identity(arch, randomize_batchnorm, photo_batch):
    torch.manual_seed(0)
    source = randomize_batchnorm(timm.create_model(arch, num_classes=10)).eval()
    images = photo_batch(SIZE, source)
    plain = {k: v.clone() for k, v in source.state_dict().items()}
    with torch.no_grad():
        expected = _logits_and_features(source, images)

    # the checkpoint path: the retrofit mapping on the state dict, into se_zoo's network
    target = timm.create_model(f'se_{arch}', num_classes=10).eval()
    target.load_state_dict(pretrained_filter('retrofit')(plain, target))
    ses = [m for _, m in named_se_modules(target)]
    assert all(torch.count_nonzero(se.fc2.weight) == 0 and torch.count_nonzero(se.fc1.weight) > 0 for se in ses)
    with torch.no_grad():
        retrofitted = _logits_and_features(target, images)
    assert len(retrofitted) == 6 and all(torch.equal(a, b) for a, b in zip(retrofitted, expected))

    # the next module's per-channel factors are what keeps the max-pooled channels exact: without them it differs
    plan = target.retrofit_compensation()
    per_channel = {k.split('.branch')[0] for k, v in plan.items() if v.ndim}
    assert per_channel == set(POOL_THROUGH[arch].values())
    if per_channel:
        target.load_state_dict(retrofit_state_dict(
            plain, target.state_dict(), 0.5, {k: v for k, v in plan.items() if not v.ndim}))
        with torch.no_grad():
            assert not torch.equal(target(images), expected[0])
        target.load_state_dict(pretrained_filter('retrofit')(plain, target))

    # the in-memory path: add_se on timm's network gives the same network, tensor for tensor (but fc1's init)
    assert add_se(source) is source
    with torch.no_grad():
        assert torch.equal(source(images), expected[0])
    assert name_as_se_zoo_architecture(source) == f'se_{arch}'
    added, retrofitted = source.state_dict(), target.state_dict()
    assert added.keys() == retrofitted.keys()
    differing = [k for k in added if not torch.equal(added[k], retrofitted[k])]
    assert differing and all('.se.fc1.' in k for k in differing)


def _logits_and_features(model: torch.nn.Module, images: torch.Tensor) -> list:
    final, intermediates = model.forward_intermediates(images)
    return [model.forward_head(final)] + intermediates


def test_the_compensation_doubles_what_the_gate_halves():
    plan = _meta('se_inception_v3').retrofit_compensation()
    # every branch end's BN affine once; Mixed_6b's convs twice on the max-pooled channels of Mixed_6a (384 + 96
    # from its convs, 288 passed through), once elsewhere
    assert plan['Mixed_5b.branch5x5_2.bn.weight'].item() == 1 and 'Mixed_5b.branch5x5_1.bn.weight' not in plan
    exponents = plan['Mixed_6b.branch7x7_1.conv.weight'].flatten().tolist()
    assert exponents == [0] * (384 + 96) + [1] * 288
    irv2 = _meta('se_inception_resnet_v2').retrofit_compensation()
    assert irv2['repeat.0.conv2d.weight'].item() == irv2['block8.conv2d.bias'].item() == 1
    assert len(irv2) == 2 * len(SE_MODULES['inception_resnet_v2'])


def test_torchvision_checkpoint_with_aux_logits_loads_strictly(tmp_path, randomize_batchnorm, photo_batch):
    # inception_v3.tv_in1k carries the auxiliary classifier; se_inception_v3 without one drops it and loads strictly
    torch.manual_seed(1)
    source = randomize_batchnorm(timm.create_model('inception_v3', aux_logits=True)).eval()
    path = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), path)
    model = timm.create_model('se_inception_v3', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              pretrained_filter_fn=pretrained_filter('retrofit')).eval()
    assert model.AuxLogits is None
    images = photo_batch(SIZE, source)
    with torch.no_grad():
        # the auxiliary classifier needs 299 px; the main path is what the checkpoint must reproduce
        expected = source.forward_head(source.forward_postaux(source.forward_preaux(images)))
        assert torch.equal(model(images), expected)


@pytest.mark.parametrize('name, first_se', [
    ('legacy_seresnet50', 'layer1.0.se_module is a SEModule'),  # timm's legacy SENet: its SE was not seen before
    ('legacy_senet154', 'layer1.0.se_module is a SEModule'),
    ('seresnet50', 'layer1.0.se is a SEModule'),
    ('se_inception_v3', 'Mixed_5b.se is a SqueezeExcite'),
])
def test_add_se_refuses_a_network_with_se(name, first_se):
    model = _meta(name)
    modules = [n for n, _ in model.named_modules()]
    with pytest.raises(InvalidArgumentError, match=re.escape(f'already has SE blocks ({first_se})')) as e:
        add_se(model)
    assert '\n' not in str(e.value)
    assert [n for n, _ in model.named_modules()] == modules  # nothing added


@pytest.mark.parametrize('row', list(csv.DictReader(CSV_PATH.open())), ids=lambda row: row['source'])
def test_every_upstream_row_retrofits_strictly(row):
    assert row['kind'] == row['mapping'] == 'retrofit' and not row['model_args']
    source, target = _meta(row['source'].partition('.')[0]), _meta(row['se_zoo_arch'])
    assert timm.models.get_pretrained_cfg(row['source']) is not None
    state_dict = pretrained_filter('retrofit')(source.state_dict(), target)
    assert {k: v.shape for k, v in state_dict.items()} == {k: v.shape for k, v in target.state_dict().items()}


# timm's own model checks, on the new blocks, at timm's smallest Inception input (75 px)

def _input(size: int = 75) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope='module', params=list(SE_MODULES))
def se_model(request, randomize_batchnorm) -> torch.nn.Module:
    """``se_<arch>`` with random weights and BN statistics, in eval mode. Shared: tests must not modify it."""
    torch.manual_seed(2)
    return randomize_batchnorm(timm.create_model(f'se_{request.param}')).eval()


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated')
def test_torchscript_of_every_se_block(se_model):
    # one module of each SE class (scripting the whole network repeats timm's own layers at ten times the cost)
    blocks = {}
    for name, _ in named_se_modules(se_model):
        block = se_model.get_submodule(name.rpartition('.')[0])
        blocks.setdefault(type(block), block)
    assert len(blocks) == {'SEInceptionV3': 5, 'SEInceptionV4': 5, 'SEInceptionResnetV2': 3}[type(se_model).__name__]
    for block in blocks.values():
        channels = block.in_channels() if hasattr(block, 'in_channels') else block.conv2d.out_channels
        x = torch.randn(2, channels, 9, 9, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(torch.jit.script(block)(x), block(x)), type(block).__name__


def test_backward_every_parameter_gets_a_gradient(se_model):
    model = copy.deepcopy(se_model).train()
    model.reset_classifier(42)
    out = model(_input())
    assert out.shape == (2, 42)
    out.mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_features_only_is_forward_intermediates(se_model):
    model = _meta(se_model.pretrained_cfg['architecture'], features_only=True).eval()
    state_dict = se_model.state_dict()
    # Inception-v4's features_only flattens its ``features`` Sequential: features.N becomes features_N
    model.load_state_dict({k: state_dict[re.sub(r'^features_(\d+)', r'features.\1', k)] for k in model.state_dict()},
                          assign=True)
    assert model.feature_info.channels() == [f['num_chs'] for f in se_model.feature_info]
    assert model.feature_info.reduction() == [f['reduction'] for f in se_model.feature_info]
    assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == len(list(named_se_modules(se_model)))
    x = _input()
    with torch.no_grad():
        features = model(x)
        intermediates = se_model.forward_intermediates(x, intermediates_only=True)
    assert [f.shape[1] for f in features] == model.feature_info.channels()
    assert len(features) == 5 and all(torch.equal(a, b) for a, b in zip(features, intermediates))
