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
def hub_repo(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    (tmp_path / 'se-zoo_se_zoo_main').symlink_to(CHECKOUT, target_is_directory=True)
    try:
        yield HUB_REPO
    finally:
        torch.hub.set_dir(previous)


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
