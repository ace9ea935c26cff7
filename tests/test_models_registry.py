"""``import se_zoo`` registers every se_zoo model in timm's registry, overwrites nothing, and gives each a
complete pretrained cfg."""
import fnmatch
import subprocess
import sys

import pytest
import timm

import se_zoo

# The architectures the README promises; the registry holds these and the families' other widths and layouts.
PROMISED_MODELS = {
    'se_resnet18', 'se_resnet34', 'se_resnet50', 'se_resnet101', 'se_resnet152',
    'se_resnext50_32x4d', 'se_resnext101_32x4d',
    'se_mobilenet_v1_100', 'se_mobilenet_v2_050', 'se_mobilenet_v2_100', 'se_mobilenet_v2_140',
    'se_mobilenet_v3_large_100', 'se_mobilenet_v3_small_100',
    *(f'se_efficientnet_b{i}' for i in range(8)),
}
CFG_FIELDS = ('input_size', 'mean', 'std', 'crop_pct', 'interpolation', 'first_conv', 'classifier',
              'num_classes', 'license', 'paper_ids')


def test_import_registers_only_new_names_without_warnings():
    """In a fresh interpreter with warnings as errors: importing se_zoo adds exactly its models to timm."""
    code = (
        'import timm\n'
        'before = set(timm.list_models())\n'
        'import se_zoo\n'
        'added = set(timm.list_models()) - before\n'
        'assert not before & set(se_zoo.list_models()), before & set(se_zoo.list_models())\n'
        'assert added == set(se_zoo.list_models()), added ^ set(se_zoo.list_models())\n'
        'print(len(added))\n'
    )
    result = subprocess.run([sys.executable, '-W', 'error', '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'Overwriting' not in result.stderr
    assert result.stdout.strip() == str(len(se_zoo.list_models())) != '0'


def test_list_models():
    names = se_zoo.list_models()
    assert PROMISED_MODELS <= set(names)
    assert set(names) <= set(timm.list_models())
    assert len(names) == len(set(names))
    resnets = se_zoo.list_models('se_resnet*')
    assert resnets == [n for n in names if fnmatch.fnmatch(n, 'se_resnet*')]
    assert {'se_resnet18', 'se_resnet34', 'se_resnet50', 'se_resnet101', 'se_resnet152'} <= set(resnets)
    assert se_zoo.list_models('resnet*') == []  # timm's own models are not se_zoo's


def test_entrypoints_live_in_se_zoo():
    for name in se_zoo.list_models():
        assert timm.models.model_entrypoint(name).__module__.startswith('se_zoo.models.')


@pytest.mark.parametrize('name', se_zoo.list_models())
def test_pretrained_cfg_is_complete(name):
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    missing = [f for f in CFG_FIELDS if cfg.get(f) in (None, '', ())]
    assert not missing, f'{name} pretrained cfg lacks {missing}'
    assert cfg['paper_ids'] == 'arXiv:1709.01507'
    assert len(cfg['input_size']) == 3 and cfg['input_size'][0] == 3
    assert len(cfg['mean']) == len(cfg['std']) == 3
    assert 0 < cfg['crop_pct'] <= 1
    assert cfg['interpolation'] in ('bilinear', 'bicubic')
    assert cfg['num_classes'] == 1000


def test_published_weights_have_complete_cfgs():
    listed = timm.list_pretrained('se_*')
    assert listed, 'the shipped manifest lists weights for every architecture'
    for name in listed:
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        assert cfg.get('hf_hub_id') or cfg.get('url'), name  # a Hub repo, or the release URL of the original weights
        assert all(cfg.get(f) not in (None, '') for f in CFG_FIELDS), name
