"""``se-zoo`` through ``se_zoo_cli.main``: the command list, start-up, ``list`` and ``info``."""
import importlib.metadata
import re
import subprocess
import sys

import pytest
import timm
from PIL import Image

import se_zoo
from se_zoo_cli import COMMANDS, main


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
    assert lines[0].split() == ['tag', 'source', 'kind', 'top-1', 'licence', 'format', 'pinned']
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert list(rows) == listed
    assert 'timm seresnet50.ra2_in1k' in rows['se_resnet50.ra2_in1k'] and '80.26' in rows['se_resnet50.ra2_in1k']
    assert 'retrofit (SE untrained)' in rows['se_resnet18.a1_in1k_retrofit'] and rows['se_resnet18.a1_in1k_retrofit'].endswith('no')
    assert '*' in rows['se_resnet50.ra2_in1k'], 'the default tag is marked'
    assert 'safetensors' in rows['se_resnet50.ra2_in1k']
    # the paper's own weights are release-URL pickles, read with weights_only=True, and say so
    assert 'timm legacy_senet154.in1k' in rows['se_senet154.in1k'] and 'pickle (weights_only)' in rows['se_senet154.in1k']


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


# ---- bad input: one line naming the input, exit status 2, no traceback, nothing written -----------------------

def _write_folder_model(folder):
    from se_zoo.hub.publish import save_folder
    save_folder(timm.create_model('se_resnet18', num_classes=3, channels=(8, 16, 32, 64)), folder)
    return folder


def _corrupt(path):
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:64]) + b'\0' * 32)
    return path


BAD_INPUTS = {
    # flag class: (arguments, with {out} and {tmp} filled in; the text the message must contain)
    'range': (['finetune', 'se_resnet18', '--smoothing', '1.5'], 'smoothing=1.5'),
    'range, size': (['finetune', 'se_resnet18', '--img-size', '0'], 'img_size=0'),
    'range, order': (['finetune', 'se_resnet18', '--scale', '1', '0.5'], 'scale=(1.0, 0.5)'),
    'range, count': (['inspect', '{model}', '--blocks', '0', '--out', '{tmp}/x.png'], 'num_blocks=0'),
    'choice, optimizer': (['finetune', 'se_resnet18', '--opt', 'adamx'], "opt='adamx'"),
    'choice, schedule': (['finetune', 'se_resnet18', '--sched', 'plateau'], "sched='plateau'"),
    'choice, schedule needs': (['finetune', 'se_resnet18', '--sched', 'rsqrt', '--train-samples', '64',
                                '--eval-samples', '32'], "sched='rsqrt' cannot be planned for epochs=10, warmup_epochs=0"),
    'choice, model': (['info', 'se_resnt50'], 'did you mean se_resnet50'),
    'choice, tag': (['finetune', 'se_resnet50.ra3_in1k'], 'se_resnet50.ra2_in1k'),
    'choice, dependent': (['finetune', 'se_resnet18', '--se-kwargs', 'r=4'], 'se_kwargs'),
    'path, data': (['finetune', 'se_resnet18', '--data', '{tmp}/no-such-dir'], 'no-such-dir'),
    'path, init': (['finetune', 'se_resnet18', '--init', '{tmp}/nope.safetensors'], 'nope.safetensors'),
    'device': (['finetune', 'se_resnet18', '--device', 'cuda'], "device='cuda'"),
    'parse': (['finetune', 'se_resnet18', '--model-kwargs', 'channels=(16,32'], '(16,32'),
    'parse, keyword': (['finetune', 'se_resnet18', '--model-kwargs', 'foo=1', '--train-samples', '64',
                        '--eval-samples', '32'], 'foo'),
    'tag': (['push', '{model}', 'org/name', '--tag', 'Bad Tag'], "'Bad Tag'"),
    'file content, init': (['finetune', 'se_resnet18', '--init', '{corrupt}/model.safetensors'], 'model.safetensors'),
    'file content, folder': (['inspect', '{corrupt}', '--out', '{tmp}/x.png'], 'model.safetensors'),
    'choice, auto-augment': (['finetune', 'se_resnet18', '--auto-augment', 'bogus'], "auto_augment='bogus'"),
    'choice, timm tag': (['convert', '--source', 'seresnet50.nope', '--to', 'se_resnet50.x', '--out', '{tmp}/conv'],
                         "timm has no weights 'seresnet50.nope'"),
    'choice, torchvision weights': (['convert', '--source', 'efficientnet_b0.IMAGENET1K_V9', '--to',
                                     'se_efficientnet_b0.x', '--out', '{tmp}/conv'],
                                    "torchvision efficientnet_b0 has no weights 'IMAGENET1K_V9'; did you mean IMAGENET1K_V1?"),
    'choice, source model': (['convert', '--source', 'seresnt50.ra2_in1k', '--to', 'se_resnet50.x', '--out',
                              '{tmp}/conv'], "'seresnt50' is neither a timm nor a torchvision model; did you mean"),
    'range, unreadable share': (['finetune', 'se_resnet18', '--data', '{images}', '--max-unreadable', '1.5'],
                                'max_unreadable=1.5'),
    'file content, images': (['finetune', 'se_resnet18', '--data', '{images}', '--check-images'],
                             'images/train/cup/1.jpg'),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    args, expected = BAD_INPUTS[case]
    model = _write_folder_model(tmp_path / 'model')
    corrupt = _write_folder_model(tmp_path / 'corrupt')
    _corrupt(corrupt / 'model.safetensors')
    out = tmp_path / 'out'
    images = tmp_path / 'images'
    if '{images}' in args:  # an ImageFolder with one unreadable image in 12 (8 %, past the default 1 %)
        _image_folder(images)
    fill = dict(tmp=tmp_path, model=model, corrupt=corrupt, images=images)
    argv = [a.format(**fill) for a in args]
    if argv[0] == 'finetune':
        argv += ['--output', str(out), '--no-progress', '--workers', '0']
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert 'Traceback' not in err and len(err.strip().splitlines()) <= 25  # argparse adds its usage lines
    assert err.strip().splitlines()[-1].startswith('se-zoo ')
    if 'usage:' not in err:  # se_zoo's own errors are one line
        assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not out.exists()



def _image_folder(root):
    from skimage import data
    photo = Image.fromarray(data.coffee()).resize((16, 16))
    for split in ('train', 'val'):
        for name in ('cat', 'cup'):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                photo.save(root / split / name / f'{i}.jpg')
    (root / 'train' / 'cup' / '1.jpg').write_bytes(b'\xff\xd8\xff\xe0 not a jpeg')


def _exit_code(argv) -> int:
    """main's status, whether it returns it or argparse exits with it (a value its parser rejects)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_info_counts_timms_own_se_layers(capsys):
    assert main(['info', 'seresnet50']) == 0
    share = float(re.search(r'params\s+[\d.]+ M\s+SE share ([\d.]+)%', capsys.readouterr().out).group(1))
    assert share == pytest.approx(9.01, abs=0.01)  # the same 2.53M SE parameters as se_resnet50


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['--version'])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f'se-zoo {se_zoo.__version__}'


def _modules_after(code: str) -> set:
    """The top-level packages a fresh interpreter has imported after running ``code``."""
    probe = code + '\nimport sys\nprint(" ".join(sorted({m.split(".")[0] for m in sys.modules})))'
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.splitlines()[-1].split())  # the probe's line comes after the command's output


@pytest.mark.parametrize('argv', [['--help'], ['--version'], []])
def test_the_command_list_and_version_load_neither_torch_nor_se_zoo(argv):
    # What the console script runs (pyproject's entry point), in a fresh interpreter.
    script = importlib.metadata.entry_points(group='console_scripts', name='se-zoo')
    assert [e.value for e in script] == ['se_zoo_cli:main']
    loaded = _modules_after(f'import se_zoo_cli\ntry:\n    se_zoo_cli.main({argv!r})\nexcept SystemExit:\n    pass')
    assert 'se_zoo_cli' in loaded  # the probe saw the command run
    assert not loaded & {'torch', 'timm', 'se_zoo', 'numpy'}, loaded & {'torch', 'timm', 'se_zoo', 'numpy'}


def test_a_command_loads_what_it_runs_and_no_more():
    loaded = _modules_after('import se_zoo_cli\nse_zoo_cli.main(["list"])')
    assert {'torch', 'timm', 'se_zoo'} <= loaded
    assert not loaded & {'onnxruntime', 'onnx', 'matplotlib', 'transformers'}, loaded


@pytest.mark.parametrize('command', list(COMMANDS))
def test_every_listed_command_has_its_arguments(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, '--help'])
    help_text = capsys.readouterr().out
    assert exit_info.value.code == 0 and help_text.startswith(f'usage: se-zoo {command} ')
    assert '--help' in help_text and len(help_text.splitlines()) > 4  # more than argparse's bare -h


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(['--help'])
    listed = re.findall(r'^    (\w+)\s', capsys.readouterr().out, flags=re.M)
    assert listed == list(COMMANDS)


def test_an_unknown_command_is_named_with_a_close_match(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['finetun', 'se_resnet18'])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "unknown command 'finetun'; did you mean finetune?" in err
    with pytest.raises(SystemExit):
        main(['zzz'])
    assert 'the commands are list, info, finetune' in capsys.readouterr().err
