"""``se-zoo list`` and ``se-zoo info`` through ``se_zoo.cli.main``."""
import re

import pytest
import timm

import se_zoo
from se_zoo.cli import main


def test_list(capsys):
    assert main(['list']) == 0
    assert capsys.readouterr().out.split() == se_zoo.list_models()


def test_list_filter(capsys):
    assert main(['list', 'se_efficientnet_b[0-2]']) == 0
    assert capsys.readouterr().out.split() == ['se_efficientnet_b0', 'se_efficientnet_b1', 'se_efficientnet_b2']


def test_list_pretrained(capsys):
    assert main(['list', '--pretrained']) == 0
    listed = se_zoo.list_models(pretrained=True)
    assert listed and all('.' in name for name in listed)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['tag', 'source', 'kind', 'top-1', 'licence', 'pinned']
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert list(rows) == listed
    assert 'timm seresnet50.ra2_in1k' in rows['se_resnet50.ra2_in1k'] and '80.26' in rows['se_resnet50.ra2_in1k']
    assert 'retrofit (SE untrained)' in rows['se_resnet18.a1_in1k_retrofit'] and rows['se_resnet18.a1_in1k_retrofit'].endswith('no')
    assert '*' in rows['se_resnet50.ra2_in1k'], 'the default tag is marked'


def test_list_pretrained_without_a_match_says_so(capsys):
    assert main(['list', '--pretrained', 'se_nothing*']) == 0
    assert capsys.readouterr().out.strip() == "no pretrained weights match 'se_nothing*'"


def test_info(capsys):
    assert main(['info', 'se_resnet18']) == 0
    out = capsys.readouterr().out
    assert out.startswith('se_resnet18  (input 3x224x224)')
    params = float(re.search(r'params\s+([\d.]+) M', out).group(1))
    assert params == pytest.approx(sum(p.numel() for p in timm.create_model('se_resnet18').parameters()) / 1e6, abs=1e-3)
    gmacs = float(re.search(r'GMACs\s+([\d.]+)', out).group(1))
    assert gmacs == pytest.approx(1.82, rel=0.02)  # timm seresnet18's 1.82 GMACs at 224
    se_share = float(re.search(r'params .* SE share ([\d.]+)%', out).group(1))
    assert 0 < se_share < 5
    assert 'layer4: 512ch /32' in out
    assert 'act1: 64ch /2' in out


def test_info_unknown_model(capsys):
    assert main(['info', 'se_resnet51']) == 2
    err = capsys.readouterr().err
    assert 'se-zoo info: error:' in err and 'se_resnet51' in err


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert 'usage: se-zoo' in capsys.readouterr().err
