"""se-zoo convert: public SE checkpoints become se_zoo weights that compute what the source computed.

Every source architecture is built here with random weights, real-photo BatchNorm statistics and a rescaled
classifier (so that logits are O(1) and differ from photo to photo), saved the way its library saves it, and
converted through the CLI. The output folder is then loaded into se_zoo as a user would load it and compared
with the source on skimage.data photos.
"""
import dataclasses
import json
import re
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file, save_file
from torchvision.models.resnet import ResNet

import se_zoo
from se_zoo.convert import sources as convert_module
from se_zoo_cli import main
from se_zoo.weights.manifest import MANIFEST_ENV
from se_zoo.models import reload_manifest
from se_zoo.convert import KNOWN_SOURCES, ConversionError, detect_layout, map_state_dict

from meta_shapes import meta_device

# The test inputs are smaller than the models' 224px: every family here accepts any size.
SIZE = 160


# --- senet.pytorch's se_resnet50 (github.com/moskomule/senet.pytorch, se_module.py + se_resnet.py), verbatim in
# --- structure and names: torchvision's ResNet with a bias-free Linear SE after bn3, before the residual add.
class SELayer(nn.Module):
    def __init__(self, channel: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SEBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None, *, reduction=16):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes * 4, reduction)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.se(out)
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu(out)


def senet_se_resnet50() -> nn.Module:
    model = ResNet(SEBottleneck, [3, 4, 6, 3], num_classes=1000)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    return model


# --- Source models with realistic statistics.

def _classifier(model: nn.Module) -> nn.Linear:
    if hasattr(model, 'get_classifier'):
        return model.get_classifier()
    return model.fc if isinstance(model, ResNet) else model.classifier[-1]


@torch.no_grad()
def realistic(images: torch.Tensor, model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm affine, running statistics measured on real photos, logits scaled to std ~3."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(0.2 * torch.randn(bn.num_features, generator=g))
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batch
    model.train()(images)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()
    head = _classifier(model)
    logits = model(images)
    head.weight.mul_(3 / logits.std())
    head.bias.copy_(0.1 * torch.randn(head.out_features, generator=g))
    return model


def build_source(library: str, name: str) -> nn.Module:
    torch.manual_seed(0)
    if library == 'timm':
        return timm.create_model(name)
    if library == 'torchvision':
        return torchvision.models.get_model(name, weights=None)
    return senet_se_resnet50()


@pytest.fixture(scope='module')
def images(photo_batch) -> torch.Tensor:
    return photo_batch(SIZE, timm.create_model('se_mobilenet_v3_small_100'))


def load_converted(folder: Path) -> Tuple[nn.Module, Dict]:
    """The converted weights as a user gets them: the architecture and model_args of config.json."""
    config = json.loads((folder / 'config.json').read_text())
    model = timm.create_model(config['architecture'], **config.get('model_args', {}))
    model.load_state_dict(load_file(folder / 'model.safetensors'))
    return model.eval(), config


def assert_equivalent(source: nn.Module, converted: nn.Module, images: torch.Tensor) -> Tuple[float, float]:
    """Assert equal logits (within fp32 rounding) and top-1; return the max-abs difference and max |logit|."""
    with torch.no_grad():
        expected, got = source.eval()(images), converted(images)
    # Guard the guard: logits of useful size that depend on the photo.
    assert expected.std() > 1 and (expected.argmax(-1) != expected.argmax(-1)[0]).any()
    diff = (expected - got).abs().max().item()
    # fp32 carries ~7 significant digits: 1e-5 is the bound for logits of unit scale, and held relative to the
    # logits' scale above it. Same-implementation sources (timm) come out bit-exact; a source that computes SE
    # with nn.Linear (senet.pytorch) or torchvision's blocks rounds differently by an ulp per layer.
    assert diff <= 1e-5 * max(1.0, expected.abs().max().item()), diff
    assert torch.equal(expected.argmax(-1), got.argmax(-1))
    return diff, expected.abs().max().item()


def card_figures(folder: Path) -> Tuple[str, float]:
    """The max-abs logit difference (as written) and the largest |logit| that the model card reports."""
    match = re.search(r'by at most \*\*(\S+)\*\* \(max abs; the largest \|logit\| is (\S+)\)',
                      (folder / 'README.md').read_text())
    return match[1], float(match[2])


# One conversion per family and library (the timm mapping of the others is checked key for key below; ResNeXt
# differs from ResNet only in tensor shapes, which test_wrong_architecture_is_reported exercises).
CONVERSIONS = [
    ('timm', 'seresnet50', 'se_resnet50', {}),
    ('timm', 'mobilenetv3_large_100', 'se_mobilenet_v3_large_100', {}),
    ('timm', 'efficientnet_b0', 'se_efficientnet_b0', {}),
    ('torchvision', 'efficientnet_b0', 'se_efficientnet_b0', {}),
    ('torchvision', 'mobilenet_v3_large', 'se_mobilenet_v3_large_100', {'bn_eps': 1e-3}),
    ('torchvision', 'mobilenet_v3_small', 'se_mobilenet_v3_small_100', {'bn_eps': 1e-3}),
    ('senet', 'se_resnet50', 'se_resnet50', {'se_bias': False}),
]


@pytest.mark.parametrize('library,name,target,model_args', CONVERSIONS, ids=[f'{c[0]}-{c[1]}' for c in CONVERSIONS])
def test_convert_checkpoint_file(tmp_path, images, capsys, library, name, target, model_args):
    source = realistic(images, build_source(library, name))
    state_dict = {k: v.contiguous() for k, v in source.state_dict().items()}
    if library == 'senet':
        # senet.pytorch publishes a pickle, trained under nn.DataParallel.
        checkpoint = tmp_path / 'seresnet50.pkl'
        torch.save({f'module.{k}': v for k, v in state_dict.items()}, checkpoint)
        extra = ['--allow-pickle']
    else:
        checkpoint = tmp_path / f'{name}.safetensors'
        save_file(state_dict, checkpoint)
        extra = []
    out = tmp_path / 'out'

    assert main(['convert', '--source', str(checkpoint), '--to', f'{target}.test', '--out', str(out)] + extra) == 0

    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    converted, config = load_converted(out)
    assert config['architecture'] == target
    assert {k: config.get('model_args', {})[k] for k in model_args} == model_args
    diff, scale = assert_equivalent(source, converted, images)
    card = (out / 'README.md').read_text()
    if library == 'senet':
        assert 'was not measured at conversion time' in card
    else:
        # The CLI measured it too (at the model's own 224px): it is in the card and in the output.
        # The CLI measures at 224px on the source's own logit scale (|logit| up to ~100 here), so the card's
        # figure is held to 1e-5 of that scale: float32 carries about 7 significant digits.
        diff_text, scale_at_224 = card_figures(out)
        assert float(diff_text) <= 1e-5 * max(1.0, scale_at_224)
        assert f'max abs logit diff {diff_text}' in capsys.readouterr().out
    print(f'{library} {name} -> {target}: max abs logit diff {diff:.3g} (max |logit| {scale:.3g})')


def test_convert_refuses_a_model_that_computes_something_else(tmp_path, images, monkeypatch, capsys):
    """Without torchvision's BatchNorm eps=1e-3 every key of MobileNetV3 maps, but the logits do not match."""
    sources = tuple(dataclasses.replace(k, target_kwargs={}) if k.model == 'mobilenet_v3_small' else k
                    for k in KNOWN_SOURCES)
    monkeypatch.setattr(convert_module, 'KNOWN_SOURCES', sources)
    source = realistic(images, build_source('torchvision', 'mobilenet_v3_small'))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / 'tv.safetensors')
    out = tmp_path / 'out'
    assert main(['convert', '--source', str(tmp_path / 'tv.safetensors'), '--to', 'se_mobilenet_v3_small_100.tv',
                 '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert 'does not compute what' in err and 'max abs logit difference' in err
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / 'tv.safetensors']


@pytest.mark.parametrize('known', [k for k in KNOWN_SOURCES if k.layout == 'timm'], ids=lambda k: k.model)
def test_every_timm_source_maps_completely(known):
    with meta_device():
        source = timm.create_model(known.model).state_dict()
        target = timm.create_model(known.target, **known.target_kwargs).state_dict()
    mapped = map_state_dict(source, 'timm', target)
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in target.items()}


@pytest.mark.parametrize('known', [k for k in KNOWN_SOURCES if k.layout == 'torchvision'], ids=lambda k: k.model)
def test_every_torchvision_source_maps_completely(known):
    with meta_device():
        source = torchvision.models.get_model(known.model).state_dict()
        target = timm.create_model(known.target, **known.target_kwargs).state_dict()
    mapped = map_state_dict(source, 'torchvision', target)
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in target.items()}


# B1 stands for B1..B4 (B0's ops at other depths and widths), B5 for B5..B7 (BatchNorm eps=1e-3).
@pytest.mark.parametrize('name', ['efficientnet_b1', 'efficientnet_b5'])
def test_torchvision_efficientnet_is_equivalent(name, photo_batch):
    known = next(k for k in KNOWN_SOURCES if k.layout == 'torchvision' and k.model == name)
    converted = timm.create_model(known.target, **known.target_kwargs).eval()
    images = photo_batch(64, converted)
    source = realistic(images, build_source('torchvision', name))
    converted.load_state_dict(map_state_dict(source.state_dict(), 'torchvision', converted.state_dict()))
    diff, scale = assert_equivalent(source, converted, images)
    print(f'torchvision {name}: max abs logit diff {diff:.3g} (max |logit| {scale:.3g})')


def test_known_sources_are_se_zoo_models():
    assert {k.target for k in KNOWN_SOURCES} <= set(se_zoo.list_models())


# --- Fetching by name: timm and torchvision run their own loaders against a pre-filled cache (nothing is downloaded).

def test_convert_timm_name_tag(tmp_path, images, hub_server, capsys):
    """A timm name.tag is fetched from timm's Hub repo (here the test Hub) through se_zoo's verified fetch."""
    source = realistic(images, build_source('timm', 'mobilenetv3_small_100'))
    timm.models.push_to_hf_hub(source, 'timm/mobilenetv3_small_100.lamb_in1k')
    out = tmp_path / 'out'

    assert main(['convert', '--source', 'timm:mobilenetv3_small_100.lamb_in1k',
                 '--to', 'se_mobilenet_v3_small_100.lamb_in1k', '--out', str(out)]) == 0

    converted, config = load_converted(out)
    assert_equivalent(source, converted, images)
    # The weights keep the source's preprocessing and licence, from its pretrained cfg.
    cfg = timm.models.get_pretrained_cfg('mobilenetv3_small_100.lamb_in1k')
    assert config['pretrained_cfg']['interpolation'] == cfg.interpolation == 'bicubic'
    assert config['pretrained_cfg']['license'] == cfg.license
    card = (out / 'README.md').read_text()
    assert f'license: {cfg.license}' in card and 'timm mobilenetv3_small_100.lamb_in1k' in card


def test_convert_timm_name_tag_offline_without_cache(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    out = tmp_path / 'out'
    assert main(['convert', '--source', 'seresnet50.ra2_in1k', '--to', 'se_resnet50.ra2_in1k', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert "could not fetch timm weights 'seresnet50.ra2_in1k'" in err and 'HF_HUB_OFFLINE' in err
    assert not out.exists()


def test_convert_torchvision_weights(tmp_path, images, monkeypatch):
    from torchvision.models import MobileNet_V3_Large_Weights
    weights = MobileNet_V3_Large_Weights.IMAGENET1K_V2
    source = realistic(images, build_source('torchvision', 'mobilenet_v3_large'))
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / weights.url.rsplit('/', 1)[1])
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    out = tmp_path / 'out'

    assert main(['convert', '--source', 'torchvision:mobilenet_v3_large.IMAGENET1K_V2',
                 '--to', 'se_mobilenet_v3_large_100.tv_in1k', '--out', str(out)]) == 0

    converted, config = load_converted(out)
    assert config['model_args']['bn_eps'] == 1e-3
    assert_equivalent(source, converted, images)
    # torchvision's eval transform (resize 232, crop 224, bilinear) becomes the timm pretrained cfg.
    cfg = config['pretrained_cfg']
    assert cfg['input_size'] == [3, 224, 224] and cfg['interpolation'] == 'bilinear'
    assert cfg['crop_pct'] == round(224 / 232, 4)
    card = (out / 'README.md').read_text()
    assert f"{weights.meta['_metrics']['ImageNet-1K']['acc@1']}%" in card
    assert 'license: bsd-3-clause' in card and 'MobileNet_V3_Large_Weights.IMAGENET1K_V2' in card


def test_convert_and_push(tmp_path, images, hub_server):
    """--push publishes the folder and records arch.tag in the manifest; hf-hub: then loads the same model."""
    source = realistic(images, build_source('torchvision', 'mobilenet_v3_small'))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / 'tv.safetensors')
    manifest = tmp_path / 'manifest.json'
    manifest.write_text('{}\n')
    repo_id = f'se-zoo-test/converted-{uuid.uuid4().hex[:8]}'
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(MANIFEST_ENV, str(manifest))
            assert main(['convert', '--source', str(tmp_path / 'tv.safetensors'), '--to',
                         'se_mobilenet_v3_small_100.tv_test', '--out', str(tmp_path / 'out'), '--push', repo_id]) == 0
            entry = json.loads(manifest.read_text())['se_mobilenet_v3_small_100.tv_test']
            assert entry['repo_id'] == repo_id and entry['model_args'] == {'bn_eps': 1e-3}
            assert entry['revision'] in hub_server.repos[repo_id].commits
            published = timm.create_model(f'hf-hub:{repo_id}', pretrained=True).eval()
            assert_equivalent(source, published, images)
    finally:
        reload_manifest()  # back to the shipped manifest's cfgs


# --- Refusals: a clear report, nothing written.

@pytest.fixture(scope='module')
def small_timm_checkpoint(tmp_path_factory) -> Dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in timm.create_model('mobilenetv3_small_100').state_dict().items()}


def _refused(tmp_path: Path, capsys, state_dict: Dict[str, torch.Tensor], target: str, extra: List[str] = ()) -> str:
    checkpoint = tmp_path / 'checkpoint.safetensors'
    save_file(state_dict, checkpoint)
    out = tmp_path / 'out'
    assert main(['convert', '--source', str(checkpoint), '--to', target, '--out', str(out), *extra]) == 2
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ['checkpoint.safetensors']
    return capsys.readouterr().err


def test_missing_keys_are_reported(tmp_path, capsys, small_timm_checkpoint):
    state_dict = {k: v for k, v in small_timm_checkpoint.items() if k != 'blocks.2.1.se.conv_reduce.weight'}
    err = _refused(tmp_path, capsys, state_dict, 'se_mobilenet_v3_small_100.x')
    assert '1 missing se_zoo keys' in err and 'blocks.2.1.se.fc1.weight' in err


def test_unmatched_keys_are_reported(tmp_path, capsys, small_timm_checkpoint):
    state_dict = dict(small_timm_checkpoint, **{'blocks.0.0.extra.weight': torch.ones(3)})
    err = _refused(tmp_path, capsys, state_dict, 'se_mobilenet_v3_small_100.x')
    assert '1 unmatched checkpoint keys' in err and 'blocks.0.0.extra.weight' in err


def test_wrong_shapes_are_reported(tmp_path, capsys, small_timm_checkpoint):
    state_dict = dict(small_timm_checkpoint, **{'conv_stem.weight': torch.zeros(16, 3, 5, 5)})
    err = _refused(tmp_path, capsys, state_dict, 'se_mobilenet_v3_small_100.x')
    assert 'shape mismatches' in err and 'conv_stem.weight: checkpoint (16, 3, 5, 5), se_zoo (16, 3, 3, 3)' in err


def test_wrong_architecture_is_reported(tmp_path, capsys):
    # A ResNeXt checkpoint is not a ResNet one: grouped 3x3 convs, other widths.
    with meta_device():
        shapes = {k: v.shape for k, v in timm.create_model('seresnext50_32x4d').state_dict().items()}
    err = _refused(tmp_path, capsys, {k: torch.zeros(s) for k, s in shapes.items()}, 'se_resnet50.x')
    assert 'shape mismatches' in err and 'layer1.0.conv2.weight' in err


def test_wrong_torchvision_architecture_is_reported(tmp_path, capsys):
    small = torchvision.models.get_model('mobilenet_v3_small').state_dict()
    err = _refused(tmp_path, capsys, small, 'se_mobilenet_v3_large_100.x')
    assert 'a different architecture' in err


def test_unsupported_pair_is_reported(tmp_path, capsys):
    small = torchvision.models.get_model('mobilenet_v3_small').state_dict()
    err = _refused(tmp_path, capsys, small, 'se_resnet50.x')
    assert 'torchvision checkpoints -> se_zoo se_resnet50 is not a supported conversion' in err
    assert 'mobilenet_v3_small -> se_mobilenet_v3_small_100' in err


def test_layout_detection():
    with meta_device():
        assert detect_layout(timm.create_model('seresnet50').state_dict()) == 'timm'
        assert detect_layout(timm.create_model('efficientnet_b0').state_dict()) == 'timm'
        assert detect_layout(torchvision.models.get_model('efficientnet_b0').state_dict()) == 'torchvision'
        assert detect_layout(torchvision.models.get_model('mobilenet_v3_small').state_dict()) == 'torchvision'
        assert detect_layout(senet_se_resnet50().state_dict()) == 'senet'


def test_source_format_overrides_detection(tmp_path, capsys, small_timm_checkpoint):
    err = _refused(tmp_path, capsys, small_timm_checkpoint, 'se_mobilenet_v3_small_100.x',
                   ['--source-format', 'torchvision'])
    assert 'the torchvision checkpoint has 0 feature units' in err


def test_unknown_layout_asks_for_source_format(tmp_path, capsys):
    err = _refused(tmp_path, capsys, {'encoder.weight': torch.zeros(2)}, 'se_resnet50.x')
    assert '--source-format' in err


def test_pickle_needs_allow_pickle(tmp_path, capsys, small_timm_checkpoint):
    torch.save(small_timm_checkpoint, tmp_path / 'checkpoint.pth')
    out = tmp_path / 'out'
    assert main(['convert', '--source', str(tmp_path / 'checkpoint.pth'), '--to', 'se_mobilenet_v3_small_100.x',
                 '--out', str(out)]) == 2
    assert '--allow-pickle' in capsys.readouterr().err and not out.exists()


def test_existing_output_is_never_overwritten(tmp_path, capsys, small_timm_checkpoint):
    save_file(small_timm_checkpoint, tmp_path / 'checkpoint.safetensors')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    assert main(['convert', '--source', str(tmp_path / 'checkpoint.safetensors'), '--to',
                 'se_mobilenet_v3_small_100.x', '--out', str(out)]) == 2
    assert 'already exists' in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ['keep.txt']


def test_missing_checkpoint_file_is_reported(tmp_path, capsys):
    out = tmp_path / 'out'
    assert main(['convert', '--source', str(tmp_path / 'nope.pth'), '--to', 'se_resnet50.x', '--out', str(out)]) == 2
    assert f'no checkpoint file {tmp_path / "nope.pth"}' in capsys.readouterr().err and not out.exists()


def test_bad_target_is_reported(tmp_path, capsys):
    assert main(['convert', '--source', 'x.safetensors', '--to', 'se_resnet50', '--out', str(tmp_path / 'o')]) == 2
    assert 'needs a tag' in capsys.readouterr().err
    assert main(['convert', '--source', 'x.safetensors', '--to', 'resnet50.a', '--out', str(tmp_path / 'o')]) == 2
    assert 'not an se_zoo architecture' in capsys.readouterr().err
    assert main(['convert', '--source', 'x.safetensors', '--to', 'se_resnt50.a', '--out', str(tmp_path / 'o')]) == 2
    assert "'se_resnt50' is not an se_zoo architecture; did you mean se_resnet50" in capsys.readouterr().err


def test_map_state_dict_raises_conversion_error():
    with meta_device():
        target = timm.create_model('se_mobilenet_v3_small_100').state_dict()
    with pytest.raises(ConversionError, match='missing se_zoo keys'):
        map_state_dict({}, 'timm', target)
