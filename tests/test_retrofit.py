"""se_zoo.add_se: exact identity at insertion on every supported family, trainable SE, clear refusals."""

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

from se_zoo import SqueezeExcite, add_se
from se_zoo.errors import InvalidArgumentError

# (builder, SE blocks expected). Small members of each family (ResNets cut to one block per stage to keep the
# tests fast), ImageNet layouts, random weights.
FAMILIES = {
    'timm_resnet18_basic': (lambda: timm.create_model('resnet18', num_classes=10), 8),
    'timm_resnet50_bottleneck': (lambda: timm.create_model('resnet50', layers=(1, 1, 1, 1), num_classes=10), 4),
    'torchvision_resnet18_basic': (lambda: torchvision.models.resnet18(num_classes=10), 8),
    'torchvision_resnext_bottleneck': (lambda: torchvision.models.resnet.ResNet(
        torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=10, groups=32, width_per_group=4), 4),
    'timm_regnetx_002': (lambda: timm.create_model('regnetx_002', num_classes=10), 13),
    'timm_convnext_atto': (lambda: timm.create_model('convnext_atto', num_classes=10), 12),
    'torchvision_vgg11_bn': (lambda: torchvision.models.vgg11_bn(num_classes=10), 8),
    'plain_conv_stack': (lambda: nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)), 2),
}


@pytest.fixture(scope='module')
def images(photos) -> torch.Tensor:
    """The skimage photos at 64 px through timm's ImageNet eval transform."""
    from timm.data import create_transform
    transform = create_transform(64, is_training=False)
    return torch.stack([transform(p) for p in photos])


def _randomize(model: nn.Module, randomize_batchnorm) -> nn.Module:
    # Non-trivial BN statistics and layer scales, so that an SE that changed anything would show.
    randomize_batchnorm(model)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, 'gamma', None) is not None and isinstance(m.gamma, nn.Parameter):
                m.gamma.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize('family', FAMILIES)
def test_add_se_keeps_the_output_and_trains(family, randomize_batchnorm, images):
    build, expected_blocks = FAMILIES[family]
    torch.manual_seed(0)
    model = _randomize(build(), randomize_batchnorm)
    keys_before = set(model.state_dict())
    with torch.no_grad():
        before = model(images)

    assert add_se(model) is model
    se_blocks = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(se_blocks) == expected_blocks
    assert keys_before < set(model.state_dict())  # every existing key kept, SE keys added
    with torch.no_grad():
        after = model(images)
    assert (after - before).abs().max().item() <= 1e-6

    # The new parameters learn: fc2 gets a gradient at once, fc1 once fc2 has moved off zero.
    model.train()
    optimizer = torch.optim.SGD([p for se in se_blocks for p in se.parameters()], lr=0.1)
    for step in range(2):
        optimizer.zero_grad()
        model(images).logsumexp(-1).mean().backward()
        for se in se_blocks:
            assert se.fc2.weight.grad.abs().sum() > 0
            assert step == 0 or se.fc1.weight.grad.abs().sum() > 0
        optimizer.step()


def test_retrofitted_timm_resnet_is_an_se_resnet(randomize_batchnorm, images):
    # SE after bn3, before the add, r=16: the paper's SE-ResNet, and se_zoo's se_resnet50 key for key.
    plain = _randomize(timm.create_model('resnet50', layers=(2, 1, 1, 1), num_classes=10), randomize_batchnorm)
    add_se(plain)
    native = timm.create_model('se_resnet50', layers=(2, 1, 1, 1), num_classes=10).eval()
    native.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(native(images), plain(images))


def test_retrofitted_regnetx_has_regnety_se_layout():
    model = add_se(timm.create_model('regnetx_002'))
    block = model.s1.b1
    assert isinstance(block.se, SqueezeExcite)
    assert block.se.fc1.out_channels == round(block.conv1.conv.in_channels * 0.25)  # RegNetY's SE width


def test_se_kwargs_reach_the_layers():
    model = add_se(torchvision.models.resnet18(), r=4, gate='hard_sigmoid', squeeze='max')
    se = model.layer4[0].se
    assert se.fc1.out_channels == 512 // 4
    assert type(se.gate) is nn.Hardsigmoid
    assert se.squeeze.pool_type == 'fastmax' and not se.linear_squeeze
    x = torch.randn(2, 512, 3, 3)
    assert torch.equal(se.squeeze(x), x.amax((2, 3), keepdim=True))


@pytest.mark.parametrize('build, message', [
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), 'add_se does not support Sequential'),
    (lambda: timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8),
     'add_se does not support VisionTransformer'),
])
def test_unsupported_model_lists_what_is_supported(build, message):
    with pytest.raises(ValueError, match=message) as e:
        add_se(build())
    for family in ('timm ResNet', 'torchvision ResNet', 'RegNetX', 'ConvNeXt', 'VGG'):
        assert family in str(e.value)


def test_refuses_models_that_already_have_se():
    # se_zoo's SE, timm's SEModule (ResNet, RegNetY) and timm's legacy SENet SEModule alike, naming the first one
    with pytest.raises(InvalidArgumentError, match=r'already has SE blocks \(layer1\.0\.se is a SqueezeExcite\)'):
        add_se(timm.create_model('se_resnet18'))
    with pytest.raises(InvalidArgumentError, match=r'already has SE blocks \(layer1\.0\.se is a SEModule\)'):
        add_se(timm.create_model('seresnet18'))
    with pytest.raises(InvalidArgumentError, match=r'already has SE blocks \(s1\.b1\.se is a SEModule\)'):
        add_se(timm.create_model('regnety_002'))
    with pytest.raises(InvalidArgumentError, match=r'already has SE blocks \(layer1\.0\.se_module is a SEModule\)'):
        add_se(timm.create_model('legacy_seresnet18'))


def test_refuses_other_attention_in_a_resnet_block():
    with pytest.raises(InvalidArgumentError, match='layer1.0 already has an attention module \\(EcaModule\\)'):
        add_se(timm.create_model('ecaresnet26t'))


def test_refuses_a_gate_that_cannot_start_as_identity():
    with pytest.raises(ValueError, match='gate="sigmoid"'):
        add_se(timm.create_model('resnet18'), gate='tanh')
    with pytest.raises(ValueError, match='r='):
        add_se(timm.create_model('resnet18'), r=0)
