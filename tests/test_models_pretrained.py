"""``pretrained=True`` on the shipped manifest: the public ImageNet checkpoints in timm's Hub repos, verified, mapped
by timm's ``pretrained_filter_fn`` hook, and giving the source network's logits.

The local test Hub serves ``timm/<source>`` repos in timm's layout (``timm.models.push_to_hf_hub``: model.safetensors
and config.json), made by timm's own source architecture with random weights and non-trivial BatchNorm statistics.
The manifest entries are unpinned, so every load is held to the sha256 the Hub reports; pinning is tested on a copy.
"""
import json
import shutil
from typing import Dict, NamedTuple

import pytest
import timm
import torch

import se_zoo
from se_zoo_cli import main
from se_zoo.finetune import finetune
from se_zoo.hub.fetch import ChecksumMismatchError, TruncatedDownloadError
from se_zoo.hub.manifest import MANIFEST_ENV, MANIFEST_PATH, is_pinned, load_manifest
from se_zoo.models import reload_manifest
from se_zoo.state_dicts import pretrained_filter

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

# One tag of each kind: (se_zoo tag, image size for the logit comparison).
KINDS = {
    'se-trained resnet': ('se_resnet50.ra2_in1k', 160),
    'se-trained mbconv': ('se_mobilenet_v3_large_100.ra_in1k', 160),
    'tf-ported efficientnet': ('se_efficientnet_b0.ns_jft_in1k', 160),
    'retrofit basic-block resnet': ('se_resnet18.a1_in1k_retrofit', 160),
    'retrofit bottleneck resnet': ('se_resnet101.a1h_in1k_retrofit', 128),
    'retrofit mobilenet v1': ('se_mobilenet_v1_100.ra4_e3600_r224_in1k_retrofit', 160),
    'retrofit mobilenet v2': ('se_mobilenet_v2_100.ra_in1k_retrofit', 160),
}
MANIFEST = load_manifest(MANIFEST_PATH)


class Upstream(NamedTuple):
    source: torch.nn.Module  # timm's source network, as served
    repo_id: str


def _source_name(tag: str) -> str:
    return MANIFEST[tag]['source'].split(' ', 1)[1]


@pytest.fixture(scope='module')
def upstream(hub_server, randomize_batchnorm) -> Dict[str, Upstream]:
    """``timm/<source>`` repos on the test Hub for every tag in KINDS, pushed with timm's own publisher."""
    repos = {}
    for i, (tag, _) in enumerate(KINDS.values()):
        torch.manual_seed(i)
        source = randomize_batchnorm(timm.create_model(_source_name(tag)), seed=i).eval()
        repo_id = MANIFEST[tag]['repo_id']
        if repo_id not in hub_server.repos:
            timm.models.push_to_hf_hub(source, repo_id)
        repos[tag] = Upstream(source, repo_id)
    return repos


@pytest.mark.parametrize('kind', list(KINDS))
def test_tag_loads_the_upstream_weights_with_the_source_logits(kind, upstream, hub_server, photo_batch):
    tag, size = KINDS[kind]
    up = upstream[tag]
    before = hub_server.count('GET', f'/{up.repo_id}/resolve/.*/model.safetensors')
    model = timm.create_model(tag, pretrained=True).eval()
    assert hub_server.count('GET', f'/{up.repo_id}/resolve/.*/model.safetensors') >= before
    assert model.pretrained_cfg['source'] == 'file'  # timm loaded the file se_zoo verified
    images = photo_batch(size, up.source)
    with torch.no_grad():
        expected = up.source(images)
        logits = model(images)
        fresh = timm.create_model(tag.partition('.')[0], **MANIFEST[tag]['model_args']).eval()(images)
    scale = max(1., expected.abs().max().item())
    assert (logits - expected).abs().max().item() <= 1e-5 * scale
    assert (fresh - expected).abs().max().item() > 1e-2 * scale, 'a fresh init must not pass for the weights'


def test_retrofit_is_bit_exact_and_its_se_starts_as_identity(upstream, photo_batch):
    tag = KINDS['retrofit mobilenet v2'][0]
    model = timm.create_model(tag, pretrained=True).eval()
    ses = [m for m in model.modules() if isinstance(m, se_zoo.SqueezeExcite)]
    assert ses and all(torch.count_nonzero(se.fc2.weight) == 0 for se in ses)
    images = photo_batch(160, upstream[tag].source)
    with torch.no_grad():
        assert torch.equal(model(images), upstream[tag].source(images))
    assert any('SE is untrained' in note for note in model.pretrained_cfg['notes'])


@pytest.mark.parametrize('name', sorted(MANIFEST))
def test_every_tag_loads_strictly_into_its_model(name):
    """Shapes only, on the meta device: the entry's mapping turns the source state dict into exactly the target's."""
    entry = MANIFEST[name]
    num_classes = entry['pretrained_cfg'].get('num_classes', 1000)
    with torch.device('meta'):
        source = timm.create_model(entry['source_arch'], num_classes=num_classes)
        target = timm.create_model(name.partition('.')[0], num_classes=num_classes, **entry['model_args'])
    state_dict = source.state_dict()
    if entry['mapping'] != 'none':
        state_dict = pretrained_filter(entry['mapping'])(state_dict, target)
    assert {k: v.shape for k, v in state_dict.items()} == {k: v.shape for k, v in target.state_dict().items()}


def test_every_registered_model_has_an_imagenet_tag():
    tagged = {name.partition('.')[0] for name in timm.list_pretrained('se_*')}
    assert set(se_zoo.list_models()) <= tagged
    for arch in se_zoo.list_models():
        default = timm.models.get_pretrained_cfg(arch)
        entry = MANIFEST[f'{arch}.{default.tag}']
        assert entry.get('default') and entry['license'] != 'cc-by-nc-4.0', arch


def test_defaults_prefer_se_trained_then_the_most_accurate():
    assert timm.models.get_pretrained_cfg('se_resnet50').tag == 'ra2_in1k'
    assert timm.models.get_pretrained_cfg('se_efficientnet_b7').tag == 'ns_jft_in1k'
    assert timm.models.get_pretrained_cfg('se_resnet18').tag == 'a1_in1k_retrofit'  # not the cc-by-nc ones
    assert MANIFEST['se_efficientnet_b7.ns_jft_in1k']['metrics']['top1'] == 86.85


def test_a_tampered_or_truncated_upstream_file_is_refused(upstream, hub_server, tmp_path):
    tag = KINDS['retrofit mobilenet v2'][0]
    repo_id = upstream[tag].repo_id
    good = hub_server.repos[repo_id].commits[hub_server.head(repo_id)]['model.safetensors'].data
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    with hub_server.tamper(repo_id, 'model.safetensors', bytes(bad)):
        with pytest.raises(ChecksumMismatchError, match='the digest the Hub reported'):
            timm.create_model(tag, pretrained=True, cache_dir=tmp_path / 'tampered')
    with hub_server.truncate(repo_id, 'model.safetensors', 1000):
        with pytest.raises(TruncatedDownloadError):
            timm.create_model(tag, pretrained=True, cache_dir=tmp_path / 'truncated')


def test_pin_writes_commit_and_sha256_and_a_pinned_entry_holds(upstream, hub_server, tmp_path, monkeypatch):
    tag = KINDS['retrofit mobilenet v1'][0]
    repo_id = upstream[tag].repo_id
    manifest = tmp_path / 'manifest.json'
    shutil.copy(MANIFEST_PATH, manifest)
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    try:
        assert main(['weights', 'pin', tag]) == 0
        entry = json.loads(manifest.read_text())[tag]
        served = hub_server.repos[repo_id].commits[hub_server.head(repo_id)]['model.safetensors']
        assert is_pinned(entry) and entry['revision'] == hub_server.head(repo_id)
        assert entry['sha256'] == served.sha256 and entry['size'] == len(served.data)
        assert sum(is_pinned(e) for e in json.loads(manifest.read_text()).values()) == 1
        pinned = timm.create_model(tag, pretrained=True)
        # The branch moves to other weights: the pinned entry keeps loading the pinned commit.
        moved = timm.create_model(_source_name(tag))
        timm.models.push_to_hf_hub(moved, repo_id)
        assert hub_server.head(repo_id) != entry['revision']
        again = timm.create_model(tag, pretrained=True)
        assert torch.equal(again.conv_stem.weight, pinned.conv_stem.weight)
        assert not torch.equal(again.conv_stem.weight, moved.conv_stem.weight)
        # Other bytes at the pinned commit, with truthful Hub metadata, fail the pinned sha256.
        bad = bytearray(served.data)
        bad[-10] ^= 0xFF
        with hub_server.tamper(repo_id, 'model.safetensors', bytes(bad)):
            with pytest.raises(ChecksumMismatchError, match='weights manifest'):
                timm.create_model(tag, pretrained=True, cache_dir=tmp_path / 'cache')
    finally:
        monkeypatch.delenv(MANIFEST_ENV)
        reload_manifest()


def test_finetune_a_retrofit_tag_from_the_hub(upstream, tmp_path):
    tag = KINDS['retrofit basic-block resnet'][0]
    source = upstream[tag].source
    result = finetune(tag, 'fashion-mnist', pretrained=True, output=str(tmp_path / 'run'), epochs=1, batch_size=32,
                      img_size=32, scale=(1., 1.), lr=2e-3, train_samples=1024, eval_samples=512, workers=0,
                      progress=False)
    assert result.model.fc.out_features == 10  # the head was reset to the data's classes
    assert result.best_accuracy > 25, 'well above the 10% of chance'
    ses = [m for m in result.model.modules() if isinstance(m, se_zoo.SqueezeExcite)]
    assert ses and all(torch.count_nonzero(se.fc2.weight) > 0 for se in ses), 'the SE layers learned'
    # The backbone started from the source's weights: one epoch at a small lr stays close to them.
    start, trained = source.conv1.weight.flatten(), result.model.conv1.weight.detach().flatten()
    fresh = timm.create_model('se_resnet18').conv1.weight.detach().flatten()
    assert torch.corrcoef(torch.stack([start, trained]))[0, 1] > 0.9
    assert abs(torch.corrcoef(torch.stack([fresh, trained]))[0, 1]) < 0.3
