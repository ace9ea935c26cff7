"""hubconf.py: torch.hub lists, documents and loads every se_zoo model.

torch.hub.list/help take only GitHub-style ``owner/repo:ref`` ids; with ``ref`` given and the repo already in
the hub cache (``<hub_dir>/<owner>_<repo>_<ref>``), they use the cache and make no network call. The checkout
is linked there under a throwaway hub dir.
"""
import inspect
from pathlib import Path

import pytest
import torch

import se_zoo

CHECKOUT = Path(__file__).resolve().parents[1]
HUB_REPO = 'se-zoo/se_zoo:main'


@pytest.fixture
def hub_repo(tmp_path, monkeypatch):
    # TORCH_HOME, not torch.hub.set_dir: set_dir pins the hub folder for the rest of the process, and later tests
    # point TORCH_HOME at their own caches.
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    (tmp_path / 'hub').mkdir()
    (tmp_path / 'hub' / 'se-zoo_se_zoo_main').symlink_to(CHECKOUT, target_is_directory=True)
    assert torch.hub.get_dir() == str(tmp_path / 'hub')
    return HUB_REPO


def test_hub_list_is_every_model(hub_repo):
    entrypoints = torch.hub.list(hub_repo, trust_repo=True, skip_validation=True)
    assert sorted(entrypoints) == sorted(se_zoo.list_models())


def test_hub_help_is_the_entrypoint_docstring(hub_repo):
    text = torch.hub.help(hub_repo, 'se_resnet50', trust_repo=True, skip_validation=True)
    assert 'SE-ResNet-50' in text


def _hubconf():
    import importlib.util
    spec = importlib.util.spec_from_file_location('se_zoo_hubconf_under_test', CHECKOUT / 'hubconf.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_entrypoints_have_docstrings_and_hub_signature():
    hubconf = _hubconf()
    assert set(hubconf.dependencies) >= {'torch', 'timm'}
    for name in se_zoo.list_models():
        entrypoint = getattr(hubconf, name)
        assert inspect.getdoc(entrypoint), f'{name} has no docstring'
        params = list(inspect.signature(entrypoint).parameters.values())
        assert params[0].name == 'pretrained' and params[0].default is False
        assert params[-1].kind is inspect.Parameter.VAR_KEYWORD
        assert len(params) == 2


def test_hub_load_local_with_kwargs():
    model = torch.hub.load(str(CHECKOUT), 'se_resnet50', source='local', num_classes=10)
    assert model.fc.out_features == 10
    assert model.pretrained_cfg['architecture'] == 'se_resnet50'
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_hub_load_is_timm_create_model_and_keeps_the_se_keywords(tmp_path):
    import json

    import timm
    from safetensors.torch import save_file

    from se_zoo.hub.publish import save_folder
    with torch.device('meta'):
        hub_model = torch.hub.load(str(CHECKOUT), 'se_resnet50', source='local', r=4)
        timm_model = timm.create_model('se_resnet50', r=4)
    # timm's record of the constructor keywords, which save_folder writes to config.json
    assert hub_model._model_args == timm_model._model_args and hub_model._model_args['r'] == 4
    assert hub_model.layer1[0].se.fc1.out_channels == 256 // 4

    small = torch.hub.load(str(CHECKOUT), 'se_resnet18', source='local', r=4, num_classes=3)
    save_folder(small, tmp_path / 'folder')
    assert json.loads((tmp_path / 'folder' / 'config.json').read_text())['model_args']['r'] == 4

    # checkpoint_path, as the entrypoint's docstring offers (a timm.create_model keyword)
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in small.state_dict().items()}
    save_file(state, str(tmp_path / 'weights.safetensors'))
    loaded = torch.hub.load(str(CHECKOUT), 'se_resnet18', source='local', r=4, num_classes=3,
                            checkpoint_path=str(tmp_path / 'weights.safetensors'))
    assert torch.equal(loaded.fc.weight, torch.full_like(loaded.fc.weight, 0.5))
    assert 'checkpoint_path' in inspect.getdoc(_hubconf().se_resnet18)
