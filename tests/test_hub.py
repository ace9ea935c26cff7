"""Publishing to and fetching from the Hub: the real huggingface_hub client against tests/hub_server.py.

Every model here is randomly initialised (with non-trivial BatchNorm statistics) and published first, so a load
that silently kept its own random init would show up as a different state_dict and different logits.
"""
import hashlib
import json
import multiprocessing
import os
import pickle
import re
import uuid
from pathlib import Path
from typing import Dict, NamedTuple

import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub import HfApi, constants

import se_zoo
from se_zoo.weights import fetch as hub_fetch
from se_zoo.weights import manifest as weights
from se_zoo.models import reload_manifest
from se_zoo_cli import main as cli_main
from se_zoo.errors import InvalidArgumentError
from se_zoo.hub.publish import CONFIG_NAME, _config, push, push_folder, save_folder
from se_zoo.weights.fetch import (
    ChecksumMismatchError, HubUnreachableError, PickleRefusedError, TruncatedDownloadError, WeightsError,
    WeightsNotFoundError,
)

from meta_shapes import meta_device

REPO_ROOT = Path(__file__).resolve().parents[1]

# huggingface_hub's HTTP stack warns about its own way of uploading LFS bytes.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


class Published(NamedTuple):
    name: str         # arch.tag in the manifest
    repo_id: str
    commit: str
    model: torch.nn.Module
    img_size: int


# family -> (arch, constructor kwargs, image size for the logits check)
FAMILIES = {
    'resnet': ('se_resnet18', {}, 64),
    'mobilenet': ('se_mobilenet_v3_small_100', {}, 64),
    'efficientnet': ('se_efficientnet_b0', {}, 64),
    'ablation': ('se_resnet18', {'r': 4, 'placement': 'post', 'se_stages': (2, 3, 4)}, 64),
}


def _unique(prefix: str) -> str:
    return f'se-zoo-test/{prefix}-{uuid.uuid4().hex[:8]}'


HEAD_ARGS = ('in_chans', 'num_classes', 'global_pool')  # timm records these with the architecture keywords


def recorded_args(model: torch.nn.Module) -> Dict:
    """The constructor keywords timm.create_model recorded for config.json, less the head and input ones."""
    return {k: v for k, v in model._model_args.items() if k not in HEAD_ARGS}


def _state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope='module')
def manifest(hub_server, tmp_path_factory):
    """An empty manifest of this module's own, in force for the module; the shipped one is restored after."""
    path = tmp_path_factory.mktemp('manifest') / 'manifest.json'
    path.write_text('{}\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(weights.MANIFEST_ENV, str(path))
        reload_manifest()
        yield path
    reload_manifest()


@pytest.fixture(scope='module')
def published(manifest, randomize_batchnorm) -> Dict[str, Published]:
    """One randomly initialised model per family, published with a manifest tag."""
    out = {}
    for i, (family, (arch, kwargs, size)) in enumerate(FAMILIES.items()):
        torch.manual_seed(i)
        model = randomize_batchnorm(timm.create_model(arch, **kwargs), seed=i).eval()
        repo_id = _unique(f'{arch}-{family}')
        commit = push(model, repo_id, manifest_tag=f'test_{family}',
                      model_card={'source': 'random init (test)', 'license': 'apache-2.0',
                                  'datasets': ['imagenet-1k'], 'metrics': {'top1': 0.1}})
        out[family] = Published(f'{arch}.test_{family}', repo_id, commit, model, size)
    return out


def _corrupt(path: Path) -> bytes:
    """Flip bytes in the middle of a file in place, keeping its size; return the original content."""
    original = path.read_bytes()
    mid = len(original) // 2
    path.write_bytes(original[:mid] + bytes(b ^ 0xFF for b in original[mid:mid + 64]) + original[mid + 64:])
    return original


@pytest.fixture
def count_tensor_loads(monkeypatch):
    """Count safetensors loads (timm's loader calls safetensors.torch.load_file)."""
    calls = []
    real = safetensors.torch.load_file
    monkeypatch.setattr(safetensors.torch, 'load_file', lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


# ---- the test Hub ----------------------------------------------------------------------------------------------

def test_hub_server_speaks_the_client_protocol(hub_server, tmp_path):
    """What the tests below rely on, through the real client: tree, paths-info, info, snapshots, Range, ETags."""
    from huggingface_hub import get_hf_file_metadata, get_session, hf_hub_url, snapshot_download
    model = timm.create_model('se_mobilenet_v3_small_100', num_classes=2)
    repo_id = _unique('protocol')
    commit = push(model, repo_id)
    api = HfApi()
    tree = {f.path: f for f in api.list_repo_tree(repo_id)}
    assert sorted(tree) == ['README.md', 'config.json', 'model.safetensors']
    weights_sha256 = hashlib.sha256(hub_server.repos[repo_id].commits[commit]['model.safetensors'].data).hexdigest()
    assert tree['model.safetensors'].lfs.sha256 == weights_sha256 and tree['config.json'].lfs is None
    assert api.get_paths_info(repo_id, ['model.safetensors'])[0].lfs.sha256 == weights_sha256
    assert api.model_info(repo_id).sha == commit and not api.file_exists(repo_id, 'nope.json')
    assert sorted(os.listdir(snapshot_download(repo_id, cache_dir=tmp_path))) == sorted(tree)
    assert get_hf_file_metadata(hf_hub_url(repo_id, 'model.safetensors')).etag == weights_sha256
    part = get_session().get(hf_hub_url(repo_id, 'config.json'), headers={'Range': 'bytes=0-9'})
    assert part.status_code == 206
    assert part.content == hub_server.repos[repo_id].commits[commit]['config.json'].data[:10]


# ---- publishing ------------------------------------------------------------------------------------------------

def test_save_folder_writes_timm_config_and_card(tmp_path):
    model = timm.create_model('se_resnet18', r=4, placement='post', num_classes=10)
    save_folder(model, tmp_path, repo_id='org/demo', model_card={
        'license': 'mit', 'datasets': ['fashion-mnist'], 'metrics': {'top1': 91.5}, 'source': 'unit test'})
    assert sorted(p.name for p in tmp_path.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['architecture'] == 'se_resnet18'
    assert (config['num_classes'], config['num_features'], config['global_pool']) == (10, 512, 'avg')
    assert config['model_args']['r'] == 4 and config['model_args']['placement'] == 'post'
    assert config['pretrained_cfg']['num_classes'] == 10 and 'hf_hub_id' not in config['pretrained_cfg']
    card = (tmp_path / 'README.md').read_text()
    front = card.split('---')[1]
    for line in ('library_name: timm', 'license: mit', '- fashion-mnist', '- timm', 'value: 91.5'):
        assert line in front
    assert "timm.create_model('hf-hub:org/demo', pretrained=True)" in card
    loaded = safetensors.torch.load_file(tmp_path / 'model.safetensors')
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_save_folder_bad_card_leaves_folder_untouched(tmp_path):
    model = timm.create_model('se_mobilenet_v3_small_100')
    save_folder(model, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match='dataset they were measured on'):
        save_folder(timm.create_model('se_mobilenet_v3_small_100', num_classes=3), tmp_path,
                    model_card={'metrics': {'top1': 1.0}})
    with pytest.raises(ValueError, match='unknown model_card keys'):
        save_folder(model, tmp_path, model_card={'licence': 'mit'})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_push_folder_refuses_unknown_architecture_and_mismatched_weights(hub_server, tmp_path):
    model = timm.create_model('se_mobilenet_v3_small_100')
    save_folder(model, tmp_path)
    config = json.loads((tmp_path / 'config.json').read_text())
    (tmp_path / 'config.json').write_text(json.dumps(dict(config, architecture='se_resnet_nope')))
    with pytest.raises(ValueError, match="architecture 'se_resnet_nope'"):
        push_folder(tmp_path, _unique('unknown-arch'))
    (tmp_path / 'config.json').write_text(json.dumps(dict(config, model_args={'r': 8})))
    with pytest.raises(ValueError, match='does not match se_mobilenet_v3_small_100'):
        push_folder(tmp_path, _unique('mismatch'))


@pytest.mark.parametrize('name', se_zoo.list_models())
def test_config_rebuilds_every_architecture_with_its_keywords(name, tmp_path):
    """config.json brings back every se_zoo architecture with non-default keywords, as hf-hub: reads it.

    Built on the meta device (no memory; ``meta_device`` skips the initialisers) and read back through timm's
    ``local-dir:`` source, which parses config.json exactly as ``hf-hub:`` does; the round trips with real weights
    are below.
    """
    with meta_device():
        model = timm.create_model(name, r=8, squeeze='max', num_classes=11)
        (tmp_path / CONFIG_NAME).write_text(json.dumps(_config(model)))
        rebuilt = timm.create_model(f'local-dir:{tmp_path}')
    assert type(rebuilt) is type(model) and rebuilt.num_classes == 11
    assert recorded_args(rebuilt) == recorded_args(model) == {'r': 8, 'squeeze': 'max'}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}


def test_config_leaves_out_drop_rates_and_head_keywords(tmp_path):
    """timm's record excludes training-only drop rates; the head keywords live at config.json's root only."""
    model = timm.create_model('se_resnet18', r=8, drop_path_rate=0.1, drop_rate=0.2, num_classes=3)
    config = json.loads((save_folder(model, tmp_path) / 'config.json').read_text())
    assert config['model_args'] == {'r': 8}
    assert config['num_classes'] == 3


def test_identical_push_creates_no_commit(hub_server):
    model = timm.create_model('se_mobilenet_v3_small_100', num_classes=5)
    repo_id = _unique('twice')
    first = push(model, repo_id)
    commits = len(hub_server.repos[repo_id].commits)
    assert push(model, repo_id) == first
    assert len(hub_server.repos[repo_id].commits) == commits
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    assert push(model, repo_id) != first


def test_publish_writes_pinned_manifest_entry(published, manifest):
    entries = json.loads(manifest.read_text())
    for family, pub in published.items():
        entry = entries[pub.name]
        assert entry['repo_id'] == pub.repo_id and entry['revision'] == pub.commit
        blob = safetensors.torch.save({k: v.contiguous() for k, v in pub.model.state_dict().items()},
                                      metadata={'format': 'pt'})
        assert entry['sha256'] == hashlib.sha256(blob).hexdigest() and entry['size'] == len(blob)
        assert entry['source'] == 'random init (test)' and entry['metrics'] == {'top1': 0.1}
    assert entries[published['ablation'].name]['model_args'] == {'r': 4, 'placement': 'post', 'se_stages': [2, 3, 4]}
    listed = timm.list_pretrained('se_*')
    assert {p.name for p in published.values()} <= set(listed)
    cfg = timm.models.get_pretrained_cfg(published['resnet'].name)
    assert cfg.hf_hub_id == f'{published["resnet"].repo_id}@{published["resnet"].commit}'


def test_shipped_manifest_only_records_real_hub_weights(hub_server, monkeypatch):
    monkeypatch.delenv(weights.MANIFEST_ENV, raising=False)
    shipped = weights.MANIFEST_PATH.read_bytes()
    repo_id = _unique('not-recorded')
    with pytest.raises(ValueError, match='lists weights on https://huggingface.co only'):
        push(timm.create_model('se_mobilenet_v3_small_100', num_classes=2), repo_id, manifest_tag='nope')
    assert repo_id not in hub_server.repos and weights.MANIFEST_PATH.read_bytes() == shipped


# ---- round trip ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('family', list(FAMILIES))
def test_round_trip_manifest_and_hf_hub(family, published, photo_batch):
    pub = published[family]
    arch, kwargs, size = FAMILIES[family]
    from_manifest = timm.create_model(pub.name, pretrained=True).eval()
    from_hub = timm.create_model(f'hf-hub:{pub.repo_id}', pretrained=True).eval()
    assert _state_dicts_equal(from_manifest, pub.model) and _state_dicts_equal(from_hub, pub.model)
    # A load that kept a random init would differ: a fresh model of the same architecture does.
    assert not _state_dicts_equal(timm.create_model(arch, **kwargs), pub.model)
    assert recorded_args(from_manifest) == recorded_args(from_hub)
    if kwargs:
        assert recorded_args(from_hub)['placement'] == 'post' and recorded_args(from_hub)['r'] == 4
    x = photo_batch(size, pub.model)
    with torch.no_grad():
        expected = pub.model(x)
        assert torch.equal(from_manifest(x), expected)
        assert torch.equal(from_hub(x), expected)
    assert from_manifest.pretrained_cfg['source'] == 'file'  # timm loaded the verified file


def test_verified_weights_keep_timm_adaptation(published):
    """timm still adapts what it loads: a new head for other num_classes, feature extraction, in_chans."""
    pub = published['mobilenet']
    source = pub.model.state_dict()
    head = timm.create_model(pub.name, pretrained=True, num_classes=7)
    assert head.classifier.out_features == 7
    assert all(torch.equal(v, source[k]) for k, v in head.state_dict().items() if not k.startswith('classifier'))
    features = timm.create_model(pub.name, pretrained=True, features_only=True)
    assert torch.equal(features.conv_stem.weight, source['conv_stem.weight'])
    grey = timm.create_model(pub.name, pretrained=True, in_chans=1)
    assert torch.allclose(grey.conv_stem.weight, source['conv_stem.weight'].sum(dim=1, keepdim=True))


def test_torch_hub_load_takes_the_verified_path(published):
    pub = published['mobilenet']
    model = torch.hub.load(str(REPO_ROOT), 'se_mobilenet_v3_small_100', source='local', pretrained=True,
                           pretrained_cfg='test_mobilenet')
    assert _state_dicts_equal(model, pub.model)


def test_pinned_revision_does_not_follow_a_moved_branch(published):
    pub = published['mobilenet']
    moved = timm.create_model('se_mobilenet_v3_small_100')
    new_commit = push(moved, pub.repo_id)
    assert new_commit != pub.commit
    assert _state_dicts_equal(timm.create_model(pub.name, pretrained=True), pub.model)
    assert _state_dicts_equal(timm.create_model(f'hf-hub:{pub.repo_id}@{pub.commit}', pretrained=True), pub.model)
    assert _state_dicts_equal(timm.create_model(f'hf-hub:{pub.repo_id}', pretrained=True), moved)


def test_manifest_weights_bring_their_architecture_keywords(published):
    pub = published['ablation']
    args = recorded_args(timm.create_model(pub.name, pretrained=True))
    assert (args['r'], args['placement'], tuple(args['se_stages'])) == (4, 'post', (2, 3, 4))
    # They are defaults, as timm treats a Hub config's model_args: the caller's keyword builds the network, here
    # one with SE before the block (other SE widths), which these weights do not fit; timm's strict load says where.
    with pytest.raises(RuntimeError, match=r'size mismatch for layer2\.0\.se\.fc1\.weight'):
        timm.create_model(pub.name, pretrained=True, placement='pre')


def test_no_published_weights_is_a_clear_error(manifest):
    with pytest.raises(WeightsNotFoundError, match='no pretrained weights are published for se_resnet34'):
        timm.create_model('se_resnet34', pretrained=True)


# ---- faults ----------------------------------------------------------------------------------------------------

def test_corrupted_cache_blob_is_refused_and_replaced(published, tmp_path, hub_server, count_tensor_loads):
    pub = published['mobilenet']
    path = hub_fetch.fetch_weights(pub.repo_id, revision=pub.commit, cache_dir=tmp_path)
    blob = Path(os.path.realpath(path))
    _corrupt(blob)
    with pytest.raises(ChecksumMismatchError, match='manifest') as err:
        timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path)
    assert 'cached copy was removed' in str(err.value)
    assert count_tensor_loads == [] and not blob.exists()
    gets = hub_server.count('GET', f'{pub.repo_id}/resolve/.*/model.safetensors')
    model = timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path)
    assert _state_dicts_equal(model, pub.model)
    assert hub_server.count('GET', f'{pub.repo_id}/resolve/.*/model.safetensors') == gets + 1


@pytest.mark.parametrize('via', ['manifest', 'hf-hub'])
def test_tampered_download_is_refused_then_good_load(via, published, tmp_path, hub_server, count_tensor_loads):
    pub = published['resnet']
    name = pub.name if via == 'manifest' else f'hf-hub:{pub.repo_id}'
    good = hub_server.repos[pub.repo_id].commits[pub.commit]['model.safetensors'].data
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    with hub_server.tamper(pub.repo_id, 'model.safetensors', bytes(bad)):
        with pytest.raises(ChecksumMismatchError, match='manifest' if via == 'manifest' else 'Hub reported'):
            timm.create_model(name, pretrained=True, cache_dir=tmp_path)
    assert count_tensor_loads == []
    assert _state_dicts_equal(timm.create_model(name, pretrained=True, cache_dir=tmp_path), pub.model)


def test_manifest_sha256_mismatch_is_refused(published, manifest, tmp_path):
    pub = published['efficientnet']
    entries = json.loads(manifest.read_text())
    forged = dict(entries[pub.name], sha256=hashlib.sha256(b'something else').hexdigest())
    bad_manifest = tmp_path / 'forged.json'
    bad_manifest.write_text(json.dumps({pub.name: forged}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(weights.MANIFEST_ENV, str(bad_manifest))
        with pytest.raises(ChecksumMismatchError, match='manifest'):
            timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path)


def test_manifest_refuses_unpinned_revision(tmp_path):
    path = tmp_path / 'manifest.json'
    path.write_text(json.dumps({'se_resnet18.x': {'repo_id': 'a/b', 'revision': 'main', 'filename': 'model.safetensors',
                                                  'sha256': '0' * 64, 'size': 1}}))
    with pytest.raises(ValueError, match='not a commit id'):
        weights.load_manifest(path)


@pytest.fixture
def backoff_retries(caplog):
    """The Hub client's retries, as it reports them: one warning ending in "[Retry n/max]" before each wait
    ("Retrying in Ns", or "Waiting Ns before retry" when the server sent Retry-After)."""
    caplog.set_level('WARNING', logger='huggingface_hub')
    return lambda: [r for r in caplog.records
                    if r.name.startswith('huggingface_hub') and re.search(r'\[Retry \d+/\d+\]', r.getMessage())]


@pytest.mark.parametrize('status', [500, 404])
def test_server_error_is_clear(status, published, tmp_path, hub_server, backoff_retries):
    pub = published['mobilenet']
    resolve = f'/{pub.repo_id}/resolve/'
    before = hub_server.count('HEAD', resolve)
    # Retry-After: 0 is the Hub's own way to shorten the client's backoff (it then waits 1 s, not 1-8 s).
    with hub_server.fail(status, r'/resolve/', retry_after=0):
        with pytest.raises(WeightsError) as err:
            timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path)
    message = str(err.value)
    assert pub.repo_id in message and hub_server.endpoint in message
    if status == 500:
        # the client did retry first. The HEADs: se_zoo's one connection check; the client's quick metadata request
        # (no retries), and, with no cached copy, its retrying one: 1 request and the 5 retries it logged
        assert 'answered 500' in message and len(backoff_retries()) == 5
        assert hub_server.count('HEAD', resolve) - before == 1 + 1 + (1 + 5)
    else:
        assert 'answered 404' in message and isinstance(err.value, WeightsNotFoundError)
    assert _state_dicts_equal(timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path), pub.model)


def test_missing_repo_revision_and_file(published, tmp_path):
    pub = published['mobilenet']
    with pytest.raises(WeightsNotFoundError, match='repo se-zoo-test/nope not found'):
        hub_fetch.fetch_weights('se-zoo-test/nope', cache_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match="revision 'v9' not found"):
        hub_fetch.fetch_weights(pub.repo_id, revision='v9', cache_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match='weights.safetensors .* not found'):
        hub_fetch.fetch_weights(pub.repo_id, filename='weights.safetensors', cache_dir=tmp_path)


def test_truncated_download(published, tmp_path, hub_server):
    pub = published['mobilenet']
    with hub_server.truncate(pub.repo_id, 'model.safetensors', 1000):
        with pytest.raises(TruncatedDownloadError, match='truncated'):
            timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path)
    assert _state_dicts_equal(timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path), pub.model)


def test_offline_with_and_without_cache(published, tmp_path, hub_server, monkeypatch, backoff_retries):
    pub = published['efficientnet']
    timm.create_model(pub.name, pretrained=True)  # populate the session cache
    timm.create_model(f'hf-hub:{pub.repo_id}', pretrained=True)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    requests = len(hub_server.requests)
    assert _state_dicts_equal(timm.create_model(pub.name, pretrained=True), pub.model)
    assert _state_dicts_equal(timm.create_model(f'hf-hub:{pub.repo_id}', pretrained=True), pub.model)
    assert len(hub_server.requests) == requests
    with pytest.raises(HubUnreachableError, match='HF_HUB_OFFLINE=1 .* not in the Hub cache'):
        timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path)
    assert len(hub_server.requests) == requests and backoff_retries() == []  # offline means not even one attempt


@pytest.fixture
def dead_endpoint(monkeypatch) -> str:
    """HF_ENDPOINT set to a port nothing listens on (what HF_ENDPOINT=<it> at import time would have set)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        dead = 'http://127.0.0.1:%d' % s.getsockname()[1]
    monkeypatch.setattr(constants, 'ENDPOINT', dead)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE', dead + '/{repo_id}/resolve/{revision}/{filename}')
    return dead


def test_unreachable_hub_fails_at_once_naming_endpoint_and_repo(published, tmp_path, dead_endpoint, backoff_retries):
    pub = published['mobilenet']
    with pytest.raises(HubUnreachableError) as err:
        timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path)
    message = str(err.value)
    assert dead_endpoint in message and 'HF_ENDPOINT' in message and 'HF_HUB_OFFLINE' in message
    assert pub.repo_id in message
    with pytest.raises(HubUnreachableError, match='config.json of se-zoo-test/elsewhere'):
        se_zoo.load_model('hf-hub:se-zoo-test/elsewhere', cache_dir=tmp_path)
    # A refused connection is the answer: the Hub client's backoff (about 23 s of waits) is not entered.
    assert backoff_retries() == []


def test_unreachable_hub_still_loads_a_cached_file(published, tmp_path, hub_server, monkeypatch, backoff_retries):
    pub = published['mobilenet']
    timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path)
    requests = len(hub_server.requests)
    dead_endpoint = 'http://127.0.0.1:9'  # the discard port: nothing listens
    monkeypatch.setattr(constants, 'ENDPOINT', dead_endpoint)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE',
                        dead_endpoint + '/{repo_id}/resolve/{revision}/{filename}')
    assert _state_dicts_equal(timm.create_model(pub.name, pretrained=True, cache_dir=tmp_path), pub.model)
    assert len(hub_server.requests) == requests and backoff_retries() == []


def _fetch_in_child(name: str, cache_dir: str, barrier, results) -> None:
    barrier.wait()
    torch.set_num_threads(1)
    try:
        results.put(_digest(timm.create_model(name, pretrained=True, cache_dir=cache_dir)))
    except BaseException as e:  # report, never hang the parent
        results.put(f'error: {e!r}')


def test_eight_processes_share_one_download(published, tmp_path, hub_server):
    pub = published['mobilenet']
    ctx = multiprocessing.get_context('fork')  # children inherit the imported modules: no 8x torch import
    barrier, results = ctx.Barrier(8), ctx.Queue()
    gets = hub_server.count('GET', f'{pub.repo_id}/resolve/.*/model.safetensors')
    procs = [ctx.Process(target=_fetch_in_child, args=(pub.name, str(tmp_path), barrier, results)) for _ in range(8)]
    for p in procs:
        p.start()
    try:
        digests = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert digests == [_digest(pub.model)] * 8
    assert hub_server.count('GET', f'{pub.repo_id}/resolve/.*/model.safetensors') == gets + 1


# ---- security --------------------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _pickle_repo(tmp_path: Path, payload: object) -> str:
    folder = tmp_path / 'folder'
    save_folder(timm.create_model('se_mobilenet_v3_small_100', num_classes=4), folder)
    (folder / 'model.safetensors').unlink()
    (folder / 'pytorch_model.bin').write_bytes(pickle.dumps(payload, protocol=2))
    repo_id = _unique('pickle')
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    return repo_id


def test_pickle_is_never_unpickled_by_default(hub_server, tmp_path):
    marker = tmp_path / 'pwned'
    repo_id = _pickle_repo(tmp_path, _Payload(str(marker)))
    with pytest.raises(PickleRefusedError, match='pytorch_model.bin .* pickle'):
        timm.create_model(f'hf-hub:{repo_id}', pretrained=True, cache_dir=tmp_path / 'cache')
    assert hub_server.count('GET', f'{repo_id}/resolve/.*/pytorch_model.bin') == 0  # not even downloaded
    # allowed, the pickle is read with torch.load(weights_only=True), which refuses the payload's callable
    with hub_fetch.allow_pickle(), pytest.raises((RuntimeError, pickle.UnpicklingError)):
        timm.create_model(f'hf-hub:{repo_id}', pretrained=True, cache_dir=tmp_path / 'cache')
    assert not marker.exists()


def test_allowed_pickle_loads_with_weights_only(hub_server, tmp_path):
    source = timm.create_model('se_mobilenet_v3_small_100', num_classes=4)
    buffer = tmp_path / 'sd.pt'
    torch.save(source.state_dict(), buffer)
    repo_id = _pickle_repo(tmp_path, None)
    HfApi().upload_file(path_or_fileobj=str(buffer), path_in_repo='pytorch_model.bin', repo_id=repo_id)
    with hub_fetch.allow_pickle():
        model = timm.create_model(f'hf-hub:{repo_id}', pretrained=True, cache_dir=tmp_path / 'cache')
    assert _state_dicts_equal(model, source)


def test_unknown_architecture_in_hub_config(hub_server, tmp_path):
    folder = save_folder(timm.create_model('se_mobilenet_v3_small_100'), tmp_path / 'folder')
    config = json.loads((folder / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps(dict(config, architecture='se_resnet_nope')))
    repo_id = _unique('unknown')
    HfApi().create_repo(repo_id)
    HfApi().upload_folder(repo_id=repo_id, folder_path=folder)
    with pytest.raises(RuntimeError, match='se_resnet_nope'):
        timm.create_model(f'hf-hub:{repo_id}', pretrained=True)


# ---- command line ----------------------------------------------------------------------------------------------

def test_cli_push_records_manifest_entry(manifest, tmp_path, capsys):
    model = timm.create_model('se_mobilenet_v3_small_100', num_classes=3)
    save_folder(model, tmp_path, model_card={'source': 'cli test'})
    repo_id = _unique('cli')
    assert cli_main(['push', str(tmp_path), repo_id, '--tag', 'cli_test']) == 0
    commit = capsys.readouterr().out.strip()
    entry = json.loads(manifest.read_text())['se_mobilenet_v3_small_100.cli_test']
    assert entry['revision'] == commit and entry['source'] == 'cli test'
    assert _state_dicts_equal(timm.create_model('se_mobilenet_v3_small_100.cli_test', pretrained=True), model)
    assert cli_main(['push', str(tmp_path / 'missing'), repo_id]) == 2
    assert 'not a publish-ready folder' in capsys.readouterr().err


def test_a_bad_tag_is_refused_before_any_request(tmp_path, hub_server, manifest):
    folder = save_folder(timm.create_model('se_mobilenet_v3_small_100', num_classes=2), tmp_path / 'folder')
    before, recorded = len(hub_server.requests), manifest.read_bytes()
    for tag in ('Bad Tag', 'x.y/Z', '', 'UPPER'):
        with pytest.raises(InvalidArgumentError, match='weight tag'):
            push_folder(folder, _unique('bad-tag'), manifest_tag=tag)
    assert len(hub_server.requests) == before, 'nothing may reach the Hub before the tag is checked'
    assert manifest.read_bytes() == recorded


def test_an_unreachable_hub_fails_push_with_one_clear_error(tmp_path, monkeypatch):
    folder = save_folder(timm.create_model('se_mobilenet_v3_small_100', num_classes=2), tmp_path / 'folder')
    monkeypatch.setattr(constants, 'ENDPOINT', 'http://127.0.0.1:9')  # nothing listens on the discard port
    with pytest.raises(HubUnreachableError, match='cannot reach the Hub at http://127.0.0.1:9'):
        push_folder(folder, 'org/unreachable')


def test_hf_hub_config_offline_without_cache_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(HubUnreachableError, match='HF_HUB_OFFLINE=1 is set and config.json of se-zoo-test/nowhere'):
        se_zoo.load_model('hf-hub:se-zoo-test/nowhere', cache_dir=tmp_path)
