"""``pretrained=True`` on the shipped manifest: timm's public ImageNet checkpoints, verified, mapped by timm's
``pretrained_filter_fn`` hook, and giving the source network's logits.

The local test Hub serves ``timm/<source>`` repos in timm's layout (``timm.models.push_to_hf_hub``: model.safetensors
and config.json), made by timm's own source architecture with random weights and non-trivial BatchNorm statistics.
The original SE weights, which timm serves from release URLs, are served by the same server at a release-style URL
whose name carries the file's sha256 prefix (torch.hub's convention), and handed to the tag as timm users do, with
``pretrained_cfg_overlay``. The manifest entries are unpinned, so every load is held to the sha256 the Hub reports
(or the URL's prefix); pinning is tested on a copy.

Deep networks are served and loaded with fewer blocks per stage (``layers=(1, 1, 1, 1)`` on both sides): every
block type, the stem, the head and the key mapping are the real ones, at a fraction of the size.
"""
import csv
import dataclasses
import hashlib
import io
import json
import shutil
from typing import Any, Dict, NamedTuple, Tuple

import pytest
import timm
import torch

import se_zoo
from se_zoo_cli import main
from se_zoo.finetune import finetune
from se_zoo.models import reload_manifest
from se_zoo.weights.fetch import ChecksumMismatchError, TruncatedDownloadError
from se_zoo.weights.manifest import MANIFEST_ENV, MANIFEST_PATH, WeightEntry, load_manifest, update_manifest

pytestmark = [
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
    # one pytest-xdist worker runs the module (with --dist loadgroup, set in pyproject.toml): the served sources
    # are built and pushed once, not once per worker
    pytest.mark.xdist_group('served_sources'),
]

SHALLOW = {'layers': (1, 1, 1, 1)}


class Kind(NamedTuple):
    tag: str  # the se_zoo tag
    size: int  # image size for the logit comparison
    shrink: Dict[str, Any] = {}  # constructor keywords given to both source and se_zoo model


# One tag of each kind of source.
KINDS = {
    'se-trained resnet': Kind('se_resnet50.ra2_in1k', 160),
    'se-trained mbconv': Kind('se_mobilenet_v3_large_100.ra_in1k', 160),
    'tf-ported efficientnet': Kind('se_efficientnet_b0.ns_jft_in1k', 160),
    'retrofit basic-block resnet': Kind('se_resnet18.a1_in1k_retrofit', 160),
    'retrofit bottleneck resnet': Kind('se_resnet101.a1h_in1k_retrofit', 128, SHALLOW),
    'retrofit mobilenet v1': Kind('se_mobilenet_v1_100.ra4_e3600_r224_in1k_retrofit', 160),
    'retrofit mobilenet v2': Kind('se_mobilenet_v2_100.ra_in1k_retrofit', 160),
    'senet-154 (timm layout)': Kind('se_senet154.gluon_in1k', 128, SHALLOW),
    'resnet-d': Kind('se_resnext26d_32x4d.bt_in1k', 128),
    'resnet-rs': Kind('se_resnetrs50.tf_in1k', 128, SHALLOW),
    'anti-aliased resnext-d': Kind('se_resnextaa101d_32x8d.ah_in1k', 128, SHALLOW),
    'tf mobilenet v3': Kind('se_mobilenet_v3_small_075.in1k', 128),
    'mobilenet v3 width': Kind('se_mobilenet_v3_small_050.lamb_in1k', 128),
    'efficientnet v2 (rw)': Kind('se_efficientnetv2_rw_t.ra2_in1k', 128),
    'efficientnet v2 (tf)': Kind('se_efficientnetv2_b0.in1k', 128),
    'condconv efficientnet': Kind('se_efficientnet_cc_b0_4e.in1k', 128),
}
# The original SE weights, converted from the authors' Caffe models: timm serves them from release URLs.
URL_KINDS = {
    'legacy basic block': Kind('se_resnet18.in1k', 128),
    'legacy bottleneck': Kind('se_resnet50.in1k', 128, SHALLOW),
    'legacy senet-154': Kind('se_senet154.in1k', 128, SHALLOW),
}
MANIFEST = load_manifest(MANIFEST_PATH)


class Upstream(NamedTuple):
    source: torch.nn.Module  # timm's source network, as served
    where: str  # its Hub repo, or the release URL it is served at


def _source(kind: Kind, seed: int, randomize_batchnorm) -> torch.nn.Module:
    torch.manual_seed(seed)
    source = timm.create_model(MANIFEST[kind.tag].source_arch, **kind.shrink)
    return randomize_batchnorm(source, seed=seed).eval()


@pytest.fixture(scope='module')
def upstream(hub_server, randomize_batchnorm) -> Dict[str, Upstream]:
    """Every source of KINDS and URL_KINDS on the test server, pushed with timm's own publisher (Hub sources) or as
    the release checkpoint timm downloads (URL sources)."""
    served = {}
    for seed, kind in enumerate(KINDS.values()):
        source = _source(kind, seed, randomize_batchnorm)
        repo_id = MANIFEST[kind.tag].hub_file[0]
        if repo_id not in hub_server.repos:
            timm.models.push_to_hf_hub(source, repo_id)
        served[kind.tag] = Upstream(source, repo_id)
    for seed, kind in enumerate(URL_KINDS.values(), start=len(KINDS)):
        source = _source(kind, seed, randomize_batchnorm)
        buffer = io.BytesIO()
        torch.save(source.state_dict(), buffer)
        data = buffer.getvalue()
        name = f'{MANIFEST[kind.tag].source_arch}-{hashlib.sha256(data).hexdigest()[:8]}.pth'
        served[kind.tag] = Upstream(source, hub_server.add_release(name, data))
    return served


def _logits_of_both(model: torch.nn.Module, source: torch.nn.Module,
                    images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model(images), source(images)


@pytest.mark.parametrize('kind', list(KINDS))
def test_tag_loads_the_upstream_weights_with_the_source_logits(kind, upstream, hub_server, photo_batch, tmp_path,
                                                              assert_same_logits):
    tag, size, shrink = KINDS[kind]
    up = upstream[tag]
    before = hub_server.count('GET', f'/{up.where}/resolve/.*/model.safetensors')
    model = timm.create_model(tag, pretrained=True, cache_dir=tmp_path, **shrink).eval()  # an empty cache
    assert hub_server.count('GET', f'/{up.where}/resolve/.*/model.safetensors') == before + 1
    assert model.pretrained_cfg['source'] == 'file'  # timm loaded the file se_zoo verified
    images = photo_batch(size, up.source)
    assert_same_logits(*_logits_of_both(model, up.source, images))
    with torch.no_grad():
        fresh = timm.create_model(tag.partition('.')[0], **MANIFEST[tag].model_args, **shrink).eval()(images)
        expected = up.source(images)
    assert (fresh - expected).abs().max().item() > 1e-2 * max(1., expected.abs().max().item()), \
        'a fresh init must not pass for the weights'


@pytest.mark.parametrize('kind', list(URL_KINDS))
def test_url_tag_loads_the_original_weights_verified_by_the_hash_in_their_name(kind, upstream, photo_batch, tmp_path,
                                                                               monkeypatch, assert_same_logits):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))  # torch.hub's cache, where URL checkpoints are kept
    tag, size, shrink = URL_KINDS[kind]
    up = upstream[tag]
    assert MANIFEST[tag].is_pickle and MANIFEST[tag].file_url.startswith('https://')
    model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay={'url': up.where}, **shrink).eval()
    assert (tmp_path / 'hub' / 'checkpoints' / up.where.rpartition('/')[2]).is_file()
    assert_same_logits(*_logits_of_both(model, up.source, photo_batch(size, up.source)))


def test_a_local_copy_of_a_source_loads_through_the_tags_mapping(upstream, photo_batch, tmp_path, assert_same_logits):
    """``pretrained_cfg_overlay=dict(file=PATH)``, timm's way to hand over a file, works for every kind of tag."""
    for kinds in (KINDS, URL_KINDS):
        tag, size, shrink = next(k for k in kinds.values() if MANIFEST[k.tag].mapping not in ('none',))
        source = upstream[tag].source
        path = tmp_path / f'{tag}.pth'
        torch.save(source.state_dict(), path)
        model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay={'file': str(path)}, **shrink).eval()
        assert_same_logits(*_logits_of_both(model, source, photo_batch(size, source)))


def test_a_tampered_url_file_is_refused_before_load(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    entry = MANIFEST['se_resnet50.in1k']
    cached = tmp_path / 'hub' / 'checkpoints' / entry.file_name
    cached.parent.mkdir(parents=True)
    torch.save({'conv1.weight': torch.zeros(1)}, cached)  # the right name, other bytes
    loads = []
    monkeypatch.setattr(torch, 'load', lambda *a, **k: loads.append(a))
    with pytest.raises(ChecksumMismatchError, match='sha256 prefix in its name'):
        timm.create_model('se_resnet50.in1k', pretrained=True)
    assert loads == [] and not cached.exists(), 'nothing was unpickled, and the bad copy is gone'


def test_retrofit_is_bit_exact_and_its_se_starts_as_identity(upstream, photo_batch):
    tag = KINDS['retrofit mobilenet v2'].tag
    model = timm.create_model(tag, pretrained=True).eval()
    ses = [m for m in model.modules() if isinstance(m, se_zoo.SqueezeExcite)]
    assert ses and all(torch.count_nonzero(se.fc2.weight) == 0 for se in ses)
    images = photo_batch(160, upstream[tag].source)
    with torch.no_grad():
        assert torch.equal(model(images), upstream[tag].source(images))
    assert any('SE is untrained' in note for note in model.pretrained_cfg['notes'])


def test_every_timm_se_checkpoint_is_an_se_trained_tag():
    """weights/timm-se-checkpoints.csv lists timm's SE-trained checkpoints of the lines se_zoo covers."""
    with open(MANIFEST_PATH.parent / 'timm-se-checkpoints.csv', newline='') as f:
        listed = [row['timm_tag'] for row in csv.DictReader(f)]
    assert len(listed) == 124
    reached = {e.timm_source: e for e in MANIFEST.values() if e.kind == 'se-trained'}
    assert [t for t in listed if t not in reached] == []
    for timm_tag in listed:  # the tag's cfg names the source as timm's does
        entry = reached[timm_tag]
        cfg, source_cfg = timm.models.get_pretrained_cfg(entry.name), timm.models.get_pretrained_cfg(timm_tag)
        assert (cfg.hf_hub_id, cfg.url if not cfg.hf_hub_id else None) == \
            (source_cfg.hf_hub_id, source_cfg.url if not source_cfg.hf_hub_id else None), entry.name


def test_every_registered_model_has_an_imagenet_tag():
    tagged = {name.partition('.')[0] for name in timm.list_pretrained('se_*')}
    assert set(se_zoo.list_models()) <= tagged
    for arch in se_zoo.list_models():
        default = timm.models.get_pretrained_cfg(arch)
        entry = MANIFEST[f'{arch}.{default.tag}']
        assert entry.default and entry.resolved_license != 'cc-by-nc-4.0', arch


def test_defaults_are_se_trained_wherever_such_weights_exist_and_the_most_accurate():
    by_arch: Dict[str, list] = {}
    for entry in MANIFEST.values():
        by_arch.setdefault(entry.arch, []).append(entry)
    for arch, entries in by_arch.items():
        default = next(e for e in entries if e.default)
        candidates = [e for e in entries if e.cfg({}).get('num_classes') == 1000 and 'top1' in e.metrics
                      and e.resolved_license != 'cc-by-nc-4.0']
        if any(e.kind == 'se-trained' for e in candidates):
            assert default.kind == 'se-trained', arch
        assert default.metrics['top1'] == max(e.metrics['top1'] for e in candidates if e.kind == default.kind), arch
    # the paper's own weights replace the retrofits, and SENet-154 defaults to the original
    for arch in ('se_resnet18', 'se_resnet34', 'se_resnet101', 'se_resnet152', 'se_senet154'):
        assert timm.models.get_pretrained_cfg(arch).tag == 'in1k', arch
    assert timm.models.get_pretrained_cfg('se_resnet50').tag == 'ra2_in1k'
    assert MANIFEST['se_efficientnet_b7.ns_jft_in1k'].metrics['top1'] == 86.85
    best = max((e for e in MANIFEST.values() if e.arch.startswith(('se_res', 'se_senet')) and e.kind == 'se-trained'),
               key=lambda e: e.metrics.get('top1', 0))
    assert best.metrics['top1'] >= 87, best.name


def test_a_tampered_or_truncated_upstream_file_is_refused(upstream, hub_server, tmp_path):
    tag = KINDS['retrofit mobilenet v2'].tag
    repo_id = upstream[tag].where
    good = hub_server.repos[repo_id].commits[hub_server.head(repo_id)]['model.safetensors'].data
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    with hub_server.tamper(repo_id, 'model.safetensors', bytes(bad)):
        with pytest.raises(ChecksumMismatchError, match='the digest the Hub reported'):
            timm.create_model(tag, pretrained=True, cache_dir=tmp_path / 'tampered')
    with hub_server.truncate(repo_id, 'model.safetensors', 1000):
        with pytest.raises(TruncatedDownloadError):
            timm.create_model(tag, pretrained=True, cache_dir=tmp_path / 'truncated')


@pytest.fixture
def manifest_copy(tmp_path, monkeypatch):
    manifest = tmp_path / 'manifest.json'
    shutil.copy(MANIFEST_PATH, manifest)
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    yield manifest
    monkeypatch.delenv(MANIFEST_ENV)
    reload_manifest()


def test_pin_writes_commit_and_sha256_and_a_pinned_entry_holds(upstream, hub_server, tmp_path, manifest_copy):
    tag = KINDS['retrofit mobilenet v1'].tag
    repo_id = upstream[tag].where
    assert main(['weights', 'pin', tag]) == 0
    entry = load_manifest(manifest_copy)[tag]
    served = hub_server.repos[repo_id].commits[hub_server.head(repo_id)]['model.safetensors']
    assert entry.pinned and entry.revision == hub_server.head(repo_id)
    assert entry.sha256 == served.sha256 and entry.size == len(served.data)
    assert sum(e.pinned for e in load_manifest(manifest_copy).values()) == 1
    reload_manifest()
    pinned = timm.create_model(tag, pretrained=True)
    # The branch moves to other weights: the pinned entry keeps loading the pinned commit.
    moved = timm.create_model(MANIFEST[tag].source_arch)
    timm.models.push_to_hf_hub(moved, repo_id)
    assert hub_server.head(repo_id) != entry.revision
    again = timm.create_model(tag, pretrained=True)
    assert torch.equal(again.conv_stem.weight, pinned.conv_stem.weight)
    assert not torch.equal(again.conv_stem.weight, moved.conv_stem.weight)
    # Other bytes at the pinned commit, with truthful Hub metadata, fail the pinned sha256.
    bad = bytearray(served.data)
    bad[-10] ^= 0xFF
    with hub_server.tamper(repo_id, 'model.safetensors', bytes(bad)):
        with pytest.raises(ChecksumMismatchError, match='weights manifest'):
            timm.create_model(tag, pretrained=True, cache_dir=tmp_path / 'cache')


def test_pin_records_a_url_files_sha256_and_a_pinned_url_entry_holds(upstream, hub_server, tmp_path, manifest_copy,
                                                                     monkeypatch, photo_batch, assert_same_logits):
    """A weight at a release URL, pinned: its full sha256 is recorded, and other bytes are refused from then on."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    tag, size, shrink = URL_KINDS['legacy basic block']
    source_entry = MANIFEST[tag]
    url = upstream[tag].where
    own = dataclasses.replace(source_entry, name='se_resnet18.mirror', timm_source=None, url=url, default=False,
                              pretrained_cfg={'num_classes': 1000}, license='apache-2.0')
    update_manifest({own.name: own}, manifest_copy)
    assert main(['weights', 'pin', own.name]) == 0
    pinned = load_manifest(manifest_copy)[own.name]
    data = hub_server.releases[url.rpartition('/')[2]]
    assert pinned.pinned and pinned.sha256 == hashlib.sha256(data).hexdigest() and pinned.size == len(data)
    reload_manifest()
    model = timm.create_model(own.name, pretrained=True, **shrink).eval()
    assert_same_logits(*_logits_of_both(model, upstream[tag].source, photo_batch(size, upstream[tag].source)))
    cached = tmp_path / 'torch' / 'hub' / 'checkpoints' / url.rpartition('/')[2]
    cached.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ChecksumMismatchError, match='weights manifest'):
        timm.create_model(own.name, pretrained=True)
    assert not cached.exists()


def test_manifest_entries_are_typed_and_checked(tmp_path):
    path = tmp_path / 'manifest.json'
    path.write_text(json.dumps({'se_resnet50.x': {'timm_source': 'seresnet50.nope', 'mapping': 'none'}}))
    with pytest.raises(ValueError, match='no pretrained tag .seresnet50.nope.'):
        load_manifest(path)
    path.write_text(json.dumps({'se_resnet50.x': {'timm_source': 'seresnet50.ra2_in1k', 'input_size': [3, 1, 1]}}))
    with pytest.raises(ValueError, match='unknown fields'):
        load_manifest(path)
    path.write_text(json.dumps({'se_resnet50.x': {'timm_source': 'seresnet50.ra2_in1k', 'repo_id': 'a/b'}}))
    with pytest.raises(ValueError, match="timm's cfg"):
        load_manifest(path)
    entry = WeightEntry(name='se_resnet50.x', timm_source='seresnet50.ra2_in1k', kind='se-trained')
    assert entry.hub_file == ('timm/seresnet50.ra2_in1k', 'model.safetensors') and not entry.is_pickle


def test_finetune_a_retrofit_tag_from_the_hub(upstream, tmp_path):
    tag = KINDS['retrofit basic-block resnet'].tag
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
