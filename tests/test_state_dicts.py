"""``se_zoo.state_dicts``: timm's SE networks load into their se_zoo counterparts through the ``timm`` mapping
(only the EfficientNet/MobileNetV3 SE conv names differ) and give the same logits on real photos.

timm's model is built with random weights and randomised BatchNorm affine parameters and running statistics
(so every residual branch and SE block contributes), its state_dict is mapped and loaded strictly into the se_zoo model,
and both classify the skimage photos through timm's eval transform. The four pairs named by the spec run at
224 px, MobileNetV3-Small and EfficientNet-B1 at 64 px. For EfficientNet B2-B7, which repeat B0/B1's blocks at
other widths and depths, the strict load (every key, every shape) is checked on the meta device. The original
SENets (timm's ``legacy_se*``) are recognised as the ``legacy`` layout and map completely, 7x7 and deep stem alike.
"""
import pytest
import timm
import torch

import se_zoo  # noqa: F401  (registers the se_* models)
from se_zoo import SqueezeExcite
from se_zoo.state_dicts import ConversionError, detect_layout, map_state_dict, rename_state_dict

from meta_shapes import meta_device

MAX_ABS_DIFF = 1e-5

PAIRS_224 = (
    ('seresnet50', 'se_resnet50'),
    ('seresnext50_32x4d', 'se_resnext50_32x4d'),
    ('mobilenetv3_large_100', 'se_mobilenet_v3_large_100'),
    ('efficientnet_b0', 'se_efficientnet_b0'),
)
PAIRS_64 = (('mobilenetv3_small_100', 'se_mobilenet_v3_small_100'), ('efficientnet_b1', 'se_efficientnet_b1'))
PAIRS_STATE_DICT = tuple((f'efficientnet_b{i}', f'se_efficientnet_b{i}') for i in range(2, 8))


def _check_pair(timm_name: str, se_name: str, size: int, photo_batch, randomize_batchnorm) -> None:
    reference = randomize_batchnorm(timm.create_model(timm_name), seed=1).eval()
    model = timm.create_model(se_name).eval()
    model.load_state_dict(rename_state_dict(reference.state_dict(), 'timm', model.state_dict()), strict=True)
    assert any(isinstance(m, SqueezeExcite) for m in model.modules())

    images = photo_batch(size, model)
    with torch.no_grad():
        expected = reference(images)
        logits = model(images)
    assert (logits - expected).abs().max().item() <= MAX_ABS_DIFF
    # The comparison is not vacuous: the photos get distinct, non-trivial logits.
    assert expected.std().item() > 1e-2
    assert not torch.allclose(expected[0], expected[1])


@pytest.mark.parametrize('timm_name,se_name', PAIRS_224, ids=[p[1] for p in PAIRS_224])
def test_timm_weights_give_identical_logits(timm_name, se_name, photo_batch, randomize_batchnorm):
    _check_pair(timm_name, se_name, 224, photo_batch, randomize_batchnorm)


@pytest.mark.parametrize('timm_name,se_name', PAIRS_64, ids=[p[1] for p in PAIRS_64])
def test_timm_weights_give_identical_logits_small(timm_name, se_name, photo_batch, randomize_batchnorm):
    _check_pair(timm_name, se_name, 64, photo_batch, randomize_batchnorm)


@pytest.mark.parametrize('timm_name,se_name', PAIRS_STATE_DICT, ids=[p[1] for p in PAIRS_STATE_DICT])
def test_timm_state_dict_loads_strictly(timm_name, se_name):
    reference = timm.create_model(timm_name, device='meta')
    model = timm.create_model(se_name, device='meta')
    mapped = rename_state_dict(reference.state_dict(), 'timm', model.state_dict())
    model.load_state_dict(mapped, strict=True)  # raises on a missing, extra or mis-shaped key


def test_se_weights_matter(photo_batch, randomize_batchnorm):
    """Guards the test above: changing one SE weight of se_resnet50 changes its logits."""
    model = randomize_batchnorm(timm.create_model('se_resnet50')).eval()
    images = photo_batch(64, model)
    with torch.no_grad():
        before = model(images)
        model.layer4[-1].se.fc2.bias.add_(1.0)
        after = model(images)
    assert (after - before).abs().max().item() > 100 * MAX_ABS_DIFF


def _parameterised_call_order(model: torch.nn.Module, x: torch.Tensor) -> list:
    """Names of the modules that own parameters, in the order a training forward calls them."""
    order = []
    handles = [module.register_forward_pre_hook(lambda m, args, name=name: order.append(name))
               for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]
    try:
        model.train()(x).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    return order


@pytest.mark.parametrize('timm_name,se_name', PAIRS_224[:2], ids=[p[1] for p in PAIRS_224[:2]])
def test_blocks_run_in_timms_order(timm_name, se_name):
    """Same layers in the same order as timm: the same feature maps are alive at once, so training peaks at the
    same memory. (A block that downsampled its shortcut before its residual branch once held one more map.)"""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    kwargs = dict(layers=(1, 1, 1, 1), num_classes=10)
    expected = _parameterised_call_order(timm.create_model(timm_name, **kwargs), x)
    assert any('downsample' in name for name in expected)
    assert _parameterised_call_order(timm.create_model(se_name, **kwargs), x) == expected


# The original SENets (timm's legacy_se*): a 7x7 stem and SENet-154's three-conv stem.
LEGACY_PAIRS = (('legacy_seresnet50', 'se_resnet50'), ('legacy_senet154', 'se_senet154'))


@pytest.mark.parametrize('timm_name,se_name', LEGACY_PAIRS, ids=[p[1] for p in LEGACY_PAIRS])
def test_legacy_layout_is_detected_and_maps_completely(timm_name, se_name):
    with meta_device():
        reference = timm.create_model(timm_name)
        model = timm.create_model(se_name)
    source = reference.state_dict()
    assert detect_layout(source) == 'legacy'
    mapped = map_state_dict(source, 'legacy', model.state_dict())  # raises unless every key and shape matches
    assert mapped['fc.weight'] is source['last_linear.weight']
    assert mapped['layer1.0.se.fc1.weight'] is source['layer1.0.se_module.fc1.weight']
    assert mapped['bn1.weight'] is source['layer0.bn3.weight' if se_name == 'se_senet154' else 'layer0.bn1.weight']


def test_legacy_deep_stem_does_not_map_onto_a_7x7_stem():
    with meta_device():
        source = timm.create_model('legacy_senet154', layers=(1, 1, 1, 1)).state_dict()
        target = timm.create_model('se_resnext50_32x4d', layers=(1, 1, 1, 1)).state_dict()
    with pytest.raises(ConversionError, match='layer0.conv2.weight'):
        map_state_dict(source, 'legacy', target)
