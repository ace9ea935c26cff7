"""se_zoo.deploy: ONNX export checked on real photos, bf16 on OpenVINO against PyTorch, how ``precision='auto'``
chooses (with an injected timer: which precision is faster is made, not measured), int8 accuracy on real
Fashion-MNIST images, the sidecar round trip, and the errors a user gets (through the command line: message and
exit status 2).

Small networks at small sizes keep the file to about a minute per worker; speed is measured in
benchmarks/bench_deploy.py, never here.
"""
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from filelock import FileLock

import se_zoo
from se_zoo.errors import InvalidArgumentError, MissingDependencyError

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')
pytest.importorskip('skimage')

from se_zoo.deploy import (  # noqa: E402
    BF16_TOLERANCE, ExportMismatchError, ExportResult, bf16_unsupported_reason, evaluate, export, load)
from se_zoo.deploy import runtime as deploy_runtime  # noqa: E402
from se_zoo.deploy.config import CONFIG_NAME  # noqa: E402
from se_zoo.deploy.datasets import FASHION_MNIST_CLASSES, calibration_dataset, evaluation_dataset  # noqa: E402
from se_zoo.deploy.quantize import se_nodes, spatial_means_as_pools  # noqa: E402
from se_zoo_cli import main as cli_main  # noqa: E402

# One pytest-xdist worker runs the module (with --dist loadgroup, set in pyproject.toml): the trained network, its
# int8 export and the per-family exports are made once, and no worker waits on another's.
pytestmark = pytest.mark.xdist_group('deploy')

NARROW_RESNET = dict(channels=(16, 32, 64, 128))
# One network per family, each at a size that keeps its export to a few seconds.
FAMILIES = {
    'resnet': ('se_resnet18', NARROW_RESNET, 64),
    'mobilenet': ('se_mobilenet_v3_small_100', {}, 96),
    'efficientnet': ('se_efficientnet_b0', {}, 64),
}
# Nodes of one SE block in the exported graph: squeeze, FC, activation (SiLU is Sigmoid + Mul), FC, gate, multiply.
SE_BLOCK_NODES = {'resnet': 6, 'mobilenet': 6, 'efficientnet': 7}
FASHION_SIZE = 32


def fashion_mnist(split: str, num_samples=None):
    """Fashion-MNIST's real images, through the module se_zoo.deploy reads datasets with."""
    if split == 'train':
        return calibration_dataset('fashion-mnist', num_samples)
    return evaluation_dataset('fashion-mnist', None, num_samples)



def _model(randomize_batchnorm, name: str, size: int, num_classes: int = 10, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        name, num_classes=num_classes, pretrained_cfg_overlay=dict(input_size=(3, size, size)), **kwargs)
    return randomize_batchnorm(model).eval()


def _eval_inputs(images, model: nn.Module) -> torch.Tensor:
    """Any images through the model's eval transform (the photos alone: the ``photo_batch`` fixture)."""
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    return torch.stack([transform(image.convert('RGB')) for image in images])


def _size(model: nn.Module) -> int:
    return model.pretrained_cfg['input_size'][-1]


BF16_SUPPORTED = importlib.util.find_spec('openvino') is not None and bf16_unsupported_reason() is None
needs_bf16 = pytest.mark.skipif(not BF16_SUPPORTED, reason='bf16 needs OpenVINO and a CPU with bf16 instructions')


def _no_bf16_cpu(monkeypatch) -> None:
    """Make this CPU look like one without bf16 instructions (AVX-512 without its BF16 extension)."""
    monkeypatch.setattr(deploy_runtime, '_cpu_flags', lambda: frozenset({'sse4_2', 'avx2', 'avx512f'}))


def _cli(argv: List[str], capsys) -> Tuple[int, str, str]:
    """``se-zoo ARGV``: its exit status, stdout and stderr."""
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------------- export

@pytest.fixture(scope='module', params=list(FAMILIES))
def family_export(request, tmp_path_factory, randomize_batchnorm) -> Tuple[str, nn.Module, Path, ExportResult]:
    """One network per family, exported once for the fp32 and the bf16 checks: asked for bf16 where this CPU runs
    it, which writes the fp32 file as well (an export takes 5-15 s here)."""
    family = request.param
    name, kwargs, size = FAMILIES[family]
    model = _model(randomize_batchnorm, name, size, **kwargs)
    folder = tmp_path_factory.mktemp(family) / 'out'
    return family, model, folder, export(model, folder, precision='bf16' if BF16_SUPPORTED else 'fp32')


def test_export_matches_pytorch_on_photos_at_batch_1_and_3(family_export, photo_batch):
    family, model, folder, result = family_export
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, 'model.onnx']
    assert result.files['fp32'] == folder / 'model.onnx'
    graph = onnx.load(str(result.files['fp32'])).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField('dim_value'), 'the batch dimension must be symbolic'

    size = _size(model)
    x = photo_batch(size, model)
    with torch.inference_mode():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(result.files['fp32']), providers=['CPUExecutionProvider'])
    allowed = 1e-4 * max(1.0, float(np.abs(expected).max()))
    for batch in (1, 3):
        logits, = session.run(None, {'input': x[:batch].numpy()})
        assert logits.shape == (batch, 10)
        assert np.abs(logits - expected[:batch]).max() <= allowed
    assert result.max_abs_logit_diff <= allowed

    # The SE finder that the int8 rules use sees every SE block, and nothing else.
    num_se = sum(1 for m in model.modules() if isinstance(m, se_zoo.SqueezeExcite))
    assert num_se > 0 and len(se_nodes(onnx.load(str(result.files['fp32'])))) == SE_BLOCK_NODES[family] * num_se

    # The squeeze rewrite used before quantization is exact.
    rewritten = onnx.load(str(result.files['fp32']))
    assert spatial_means_as_pools(rewritten) == num_se + 1  # every squeeze and the head's pool
    pooled = ort.InferenceSession(rewritten.SerializeToString(), providers=['CPUExecutionProvider'])
    np.testing.assert_allclose(pooled.run(None, {'input': x[:3].numpy()})[0], expected[:3], atol=allowed, rtol=0)


def test_export_that_does_not_match_is_refused_and_writes_nothing(tmp_path, monkeypatch, randomize_batchnorm):
    model = _model(randomize_batchnorm, 'se_resnet18', 32, **NARROW_RESNET)
    export_module = importlib.import_module('se_zoo.deploy.exporting')
    real_export_onnx = export_module._export_onnx

    def exporter_with_a_bug(model, example, path, input_name, output_name):
        # stands for an exporter that gets one layer wrong: the graph computes another network
        broken = timm.create_model('se_resnet18', num_classes=10, **NARROW_RESNET).eval()
        broken.load_state_dict(model.state_dict())
        with torch.no_grad():
            broken.fc.bias.add_(0.5)
        real_export_onnx(broken, example, path, input_name, output_name)

    monkeypatch.setattr(export_module, '_export_onnx', exporter_with_a_bug)
    with pytest.raises(ExportMismatchError, match='does not match PyTorch.*nothing was written'):
        export(model, tmp_path / 'out', precision='fp32')
    assert list(tmp_path.iterdir()) == []

    # An earlier export being replaced stays as it was.
    earlier = tmp_path / 'earlier'
    earlier.mkdir()
    (earlier / CONFIG_NAME).write_text('{"format": "earlier"}')
    with pytest.raises(ExportMismatchError):
        export(model, earlier, precision='fp32', overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['earlier']
    assert (earlier / CONFIG_NAME).read_text() == '{"format": "earlier"}'


def test_tolerance_zero_refuses_what_float_rounding_alone_changes(tmp_path, randomize_batchnorm):
    model = _model(randomize_batchnorm, 'se_resnet18', 32, **NARROW_RESNET)
    with pytest.raises(ExportMismatchError, match='allowed 0'):
        export(model, tmp_path / 'out', precision='fp32', tolerance=0.0)
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------------------------------------------- int8

def _train_fashion_model(steps: int = 150, batch: int = 64) -> nn.Module:
    """A narrow SE-ResNet-18 trained briefly on real Fashion-MNIST images, preprocessed as the export will."""
    torch.manual_seed(0)
    model = timm.create_model(
        'se_resnet18', num_classes=10, **NARROW_RESNET,
        pretrained_cfg_overlay=dict(input_size=(3, FASHION_SIZE, FASHION_SIZE), crop_pct=1.0,
                                    interpolation='bilinear', label_names=list(FASHION_MNIST_CLASSES)))
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    train = fashion_mnist('train', steps * batch // 2)
    images = torch.stack([transform(train[i][0]) for i in range(len(train))])
    labels = torch.as_tensor(train.targets[:len(train)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        index = torch.randint(len(images), (batch,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model.eval()


def _run_dir(tmp_path_factory) -> Path:
    """This test run's temporary folder, shared by its pytest-xdist workers (each has a folder inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@pytest.fixture(scope='session')
def fashion_model_dir(tmp_path_factory) -> Path:
    """A trained Fashion-MNIST model saved as a timm folder (config.json with label names + safetensors), built
    once for all pytest-xdist workers."""
    root = _run_dir(tmp_path_factory)
    folder = root / 'deploy_fashion_model'
    with FileLock(str(root / 'deploy_fashion_model.lock')):
        if not (folder / 'config.json').is_file():
            from timm.models import save_for_hf
            model = _train_fashion_model()
            tmp = root / 'deploy_fashion_model.partial'
            save_for_hf(model, str(tmp), model_config=dict(label_names=list(FASHION_MNIST_CLASSES)),
                        safe_serialization=True)
            tmp.rename(folder)
    return folder


@pytest.fixture(scope='session')
def fashion_export(fashion_model_dir, tmp_path_factory) -> Path:
    """The trained model exported as int8 (asked for, so that no timing decides the default), calibrated on the
    default 256 Fashion-MNIST training images (once per run)."""
    root = _run_dir(tmp_path_factory)
    folder = root / 'deploy_fashion_export'
    with FileLock(str(root / 'deploy_fashion_export.lock')):
        if not (folder / CONFIG_NAME).is_file():
            export(str(fashion_model_dir), folder, precision='int8', calibration='fashion-mnist', progress=False)
    return folder


def _torch_model(folder: Path) -> nn.Module:
    from se_zoo.models._factory import load_model
    return load_model(str(folder)).eval()


def test_int8_accuracy_within_half_a_point_of_fp32_on_fashion_mnist(fashion_export, fashion_model_dir):
    config = json.loads((fashion_export / CONFIG_NAME).read_text())
    assert config['files'] == {'fp32': {'file': 'model.onnx', 'runtime': 'onnxruntime'},
                               'int8': {'file': 'model.int8.onnx', 'runtime': 'onnxruntime'}}
    assert config['default_precision'] == 'int8'
    assert config['int8']['calibration'] == 'fashion-mnist' and config['int8']['calibration_images'] == 256
    # int8 holds QDQ pairs around per-channel weights, as ONNX Runtime's quantizer writes them
    ops = {n.op_type for n in onnx.load(str(fashion_export / 'model.int8.onnx')).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops

    # All 10,000 test images: on a subset of 2,000, one image is 0.05 points and the subset alone moves the
    # difference by a few tenths.
    accuracy = evaluate(fashion_export, 'fashion-mnist', progress=False)
    assert accuracy['fp32'] > 75, f'the model did not learn: {accuracy}'
    assert abs(accuracy['int8'] - accuracy['fp32']) <= 0.5, accuracy

    # The fp32 export scores what the PyTorch model scores on the same images.
    model = _torch_model(fashion_model_dir)
    test = fashion_mnist('test')
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.inference_mode():
        predictions = model(torch.stack([transform(test[i][0]) for i in range(len(test))])).argmax(1).numpy()
    torch_accuracy = 100.0 * float((predictions == test.targets).mean())
    assert abs(torch_accuracy - accuracy['fp32']) <= 0.1


def test_load_and_predict_gives_pytorch_top1_with_label_names(fashion_export, fashion_model_dir, photos, tmp_path):
    model = _torch_model(fashion_model_dir)
    deployed = load(fashion_export, precision='fp32')
    assert deployed.input_size == (3, FASHION_SIZE, FASHION_SIZE)
    assert deployed.label_names == list(FASHION_MNIST_CLASSES)

    test = fashion_mnist('test', 8)
    images = [test[i][0] for i in range(len(test))] + list(photos)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f'{i}.png')
        image.save(paths[-1])
    with torch.inference_mode():
        expected = model(_eval_inputs(images, model)).softmax(1).numpy()

    for inputs in (images, paths):
        predictions = deployed.predict(inputs, top_k=3)
        assert [p.index for p in predictions] == expected.argmax(1).tolist()
        assert [p.label for p in predictions] == [FASHION_MNIST_CLASSES[i] for i in expected.argmax(1)]
        for p, probabilities in zip(predictions, expected):
            assert len(p.top) == 3 and p.top[0].probability >= p.top[1].probability >= p.top[2].probability
            np.testing.assert_allclose(p.probabilities, probabilities, atol=1e-4)

    # int8 (the default) agrees with PyTorch on the Fashion-MNIST images, whose classes it was trained on.
    int8 = load(fashion_export)
    assert int8.precision == 'int8'
    agreement = np.mean([p.index for p in int8.predict(images[:8])] == expected[:8].argmax(1))
    assert agreement >= 7 / 8


def test_predict_refuses_a_tensor_of_another_size(fashion_export):
    deployed = load(fashion_export)
    with pytest.raises(InvalidArgumentError, match=r'1x3x20x20 does not fit.*Nx3x32x32'):
        deployed.predict(torch.zeros(1, 3, 20, 20))
    with pytest.raises(InvalidArgumentError, match='does not fit'):
        deployed(np.zeros((2, 1, FASHION_SIZE, FASHION_SIZE), np.float32))
    # a preprocessed tensor of the right size is taken as it is
    assert deployed(torch.zeros(2, 3, FASHION_SIZE, FASHION_SIZE)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------------- CLI

def test_cli_export_int8_evaluate_and_predict(fashion_model_dir, tmp_path, capsys):
    out = tmp_path / 'out'
    code, stdout, _ = _cli(['export', str(fashion_model_dir), str(out), '--precision', 'int8', '--calibration',
                            'fashion-mnist',
                            '--calibration-samples', '64', '--evaluate', '--eval-samples', '500', '--no-progress'],
                           capsys)
    assert code == 0
    fp32 = float(stdout.split('fp32 test accuracy: ')[1].split('%')[0])
    int8 = float(stdout.split('int8 test accuracy: ')[1].split('%')[0])
    difference = float(stdout.split('int8 - fp32: ')[1].split(' points')[0])
    assert fp32 > 75 and int8 > 75 and difference == pytest.approx(int8 - fp32, abs=0.01)
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_NAME, 'model.int8.onnx', 'model.onnx']

    image = tmp_path / 'trouser.png'
    test = fashion_mnist('test', 100)
    trouser = next(i for i in range(len(test)) if test.targets[i] == 1)
    test[trouser][0].save(image)
    code, stdout, _ = _cli(['predict', str(out), str(image), str(image)], capsys)
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == f'{image}  (int8)' and len(lines) == 12  # two images, a header and five classes each
    assert lines[1].strip().startswith('1.') and 'Trouser' in lines[1]


def test_cli_unknown_source(tmp_path, capsys):
    code, _, err = _cli(['export', 'se_resnet5O', str(tmp_path / 'out')], capsys)
    assert code == 2
    assert "se-zoo export: error: 'se_resnet5O' is neither a model" in err and 'se_resnet50' in err
    assert not (tmp_path / 'out').exists()


def test_cli_unwritable_or_occupied_output(tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    code, _, err = _cli(['export', 'se_resnet18', str(blocker / 'out')], capsys)
    assert code == 2 and f'{blocker} is a file, not a folder' in err

    occupied = tmp_path / 'occupied'
    occupied.mkdir()
    (occupied / 'notes.txt').write_text('mine')
    code, _, err = _cli(['export', 'se_resnet18', str(occupied), '--overwrite'], capsys)
    assert code == 2 and 'is not empty' in err and 'only an earlier export is ever replaced' in err
    assert [p.name for p in occupied.iterdir()] == ['notes.txt']


def test_cli_int8_needs_calibration_images(tmp_path, capsys):
    for asked in (['--int8'], ['--precision', 'auto', '--int8'], ['--precision', 'int8']):
        code, _, err = _cli(['export', 'se_resnet18', str(tmp_path / 'out'), *asked], capsys)
        assert code == 2 and 'int8 needs calibration images' in err and len(err.strip().splitlines()) == 1

    empty = tmp_path / 'calibration'
    (empty / 'cats').mkdir(parents=True)
    (empty / 'cats' / 'readme.txt').write_text('no images here')
    code, _, err = _cli(['export', 'se_resnet18', str(tmp_path / 'out'), '--precision', 'int8', '--calibration',
                         str(empty)], capsys)
    assert code == 2 and 'holds no images' in err

    code, _, err = _cli(['export', 'se_resnet18', str(tmp_path / 'out'), '--precision', 'int8', '--calibration',
                         str(tmp_path / 'missing')], capsys)
    assert code == 2 and 'does not exist' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['calibration']


def test_cli_predict_errors(fashion_export, tmp_path, capsys):
    # A preprocessed array must already have the export's input size; images are resized, arrays are not.
    wrong_size = tmp_path / 'batch.npy'
    np.save(wrong_size, np.zeros((2, 3, 28, 28), np.float32))
    code, _, err = _cli(['predict', str(fashion_export), str(wrong_size)], capsys)
    assert code == 2 and 'shape 2x3x28x28 does not fit this model, which takes Nx3x32x32' in err
    right_size = tmp_path / 'right.npy'
    np.save(right_size, np.zeros((2, 3, FASHION_SIZE, FASHION_SIZE), np.float32))
    code, stdout, _ = _cli(['predict', str(fashion_export), str(right_size), '--top-k', '2'], capsys)
    assert code == 0 and stdout.splitlines()[0] == f'{right_size}[0]  (int8)' and len(stdout.splitlines()) == 6

    code, _, err = _cli(['predict', str(tmp_path / 'nothing'), 'x.png'], capsys)
    assert code == 2 and 'does not exist' in err

    not_an_image = tmp_path / 'notes.png'
    not_an_image.write_text('text')
    code, _, err = _cli(['predict', str(fashion_export), str(not_an_image)], capsys)
    assert code == 2 and f'cannot read image {not_an_image}' in err


def test_without_onnxruntime_export_names_the_extra(tmp_path, monkeypatch, capsys, randomize_batchnorm):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # what `import onnxruntime` sees when it is not installed
    model = _model(randomize_batchnorm, 'se_resnet18', 32, **NARROW_RESNET)
    with pytest.raises(MissingDependencyError, match=r"onnxruntime .*pip install 'se-zoo\[deploy\]'"):
        export(model, tmp_path / 'out', precision='fp32')
    assert not (tmp_path / 'out').exists()
    code, _, err = _cli(['export', 'se_resnet18', str(tmp_path / 'out')], capsys)
    assert code == 2 and "se-zoo[deploy]" in err


# ---------------------------------------------------------------------------------------------------- bf16

@needs_bf16
def test_bf16_export_matches_pytorch_on_photos(family_export, photo_batch):
    _, model, folder, result = family_export
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config['files'] == {
        'fp32': {'file': 'model.onnx', 'runtime': 'onnxruntime'},
        'bf16': {'file': 'model.onnx', 'runtime': 'openvino', 'inference_precision': 'bf16'}}
    assert config['default_precision'] == 'bf16' and config['selection'] == {'mode': 'asked', 'chosen': 'bf16'}

    deployed = load(folder)
    assert (deployed.precision, deployed.runtime) == ('bf16', 'openvino')
    x = photo_batch(_size(model), model)
    with torch.inference_mode():
        expected = model(x).numpy()
    logits = deployed.run(x.numpy())
    # bf16 keeps 8 significant bits: within BF16_TOLERANCE x max(1, max|logit|), and the same top-1 on every photo.
    allowed = BF16_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    assert np.abs(logits - expected).max() <= allowed
    assert logits.argmax(1).tolist() == expected.argmax(1).tolist()
    assert result.bf16_max_abs_logit_diff <= allowed
    # ... yet it is not float32: OpenVINO was told bf16 and did not quietly compute in f32.
    fp32 = load(folder, precision='fp32').run(x.numpy())
    assert np.abs(logits - expected).max() > 10 * np.abs(fp32 - expected).max()


def test_bf16_is_refused_on_a_cpu_without_bf16(tmp_path, monkeypatch, capsys, randomize_batchnorm):
    _no_bf16_cpu(monkeypatch)
    model = _model(randomize_batchnorm, 'se_resnet18', 32, **NARROW_RESNET)
    with pytest.raises(InvalidArgumentError, match=r'bf16 needs a CPU with bf16 instructions.*use precision'):
        export(model, tmp_path / 'out', precision='bf16')
    code, _, err = _cli(['export', 'se_resnet18', str(tmp_path / 'out'), '--precision', 'bf16'], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'bf16 needs a CPU with bf16 instructions' in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------- auto

def _made_up_timer(ms: dict):
    """A timer that reports ``ms[precision]`` milliseconds per call for every call it is handed (calling each once,
    as a real timer would), with a little round-to-round noise: which precision is faster is decided here."""
    calls = {}

    def timer(fns):
        for name, fn in fns.items():
            fn()
            calls[name] = calls.get(name, 0) + 1
        return {name: [ms[name] * 1e-3 * (1 + 0.01 * r) for r in range(5)] for name in fns}

    timer.calls = calls
    return timer


@pytest.mark.parametrize('case', ['int8 faster', 'int8 slower', 'int8 inaccurate'])
def test_auto_keeps_the_fastest_precision_whose_accuracy_holds(case, tmp_path, monkeypatch, randomize_batchnorm):
    _no_bf16_cpu(monkeypatch)  # fp32 and int8 only, on any CPU
    if case == 'int8 inaccurate':
        # no int8 logit is ever within a zero tolerance of fp32's: its accuracy does not hold, however fast
        monkeypatch.setitem(importlib.import_module('se_zoo.deploy.selection').CHECK_TOLERANCE, 'int8', 0.0)
    timer = _made_up_timer({'fp32': 10.0, 'int8': 30.0 if case == 'int8 slower' else 4.0})
    model = _model(randomize_batchnorm, 'se_resnet18', 32, **NARROW_RESNET)
    result = export(model, tmp_path / 'out', calibration='fashion-mnist', calibration_samples=32, check_samples=32,
                    batch_sizes=(1, 8), timer=timer, progress=False)

    expected = 'int8' if case == 'int8 faster' else 'fp32'
    config = json.loads((tmp_path / 'out' / CONFIG_NAME).read_text())
    assert result.precision == config['default_precision'] == expected
    assert load(tmp_path / 'out').precision == expected  # load() runs the chosen precision
    assert timer.calls == {'fp32': 2, 'int8': 2}  # both precisions timed at both batch sizes

    selection = config['selection']
    assert selection['mode'] == 'auto' and selection['chosen'] == expected and selection['batch_sizes'] == [1, 8]
    assert 'bf16 instructions' in selection['skipped']['bf16']
    assert selection['check_images'] == 4 + 32  # the photos and 32 training images beside the calibrated ones
    int8 = selection['candidates']['int8']
    assert int8['ms_per_batch'] == {'1': pytest.approx(30.0 if case == 'int8 slower' else 4.0, rel=0.05),
                                    '8': pytest.approx(30.0 if case == 'int8 slower' else 4.0, rel=0.05)}
    assert selection['candidates']['fp32']['speedup_over_fp32'] == {'1': 1.0, '8': 1.0}
    if case == 'int8 faster':
        assert int8['speedup_over_fp32']['1'] == pytest.approx(2.5, rel=0.05) and int8['accuracy_holds']
        assert int8['top1_agreement'] >= 0.99
    elif case == 'int8 slower':
        assert int8['accuracy_holds'] and int8['reason'] == 'not faster than fp32 at batch 1, 8'
    else:
        assert not int8['accuracy_holds'] and "keep fp32's top-1 and logits" in int8['reason']


@needs_bf16
def test_auto_chooses_bf16_where_it_is_fastest_and_names_its_runtime(tmp_path, randomize_batchnorm):
    timer = _made_up_timer({'fp32': 10.0, 'bf16': 5.0})
    model = _model(randomize_batchnorm, 'se_resnet18', 32, **NARROW_RESNET)
    result = export(model, tmp_path / 'out', timer=timer)
    assert result.precision == 'bf16'
    config = json.loads((tmp_path / 'out' / CONFIG_NAME).read_text())
    assert {p: f['runtime'] for p, f in config['files'].items()} == {'fp32': 'onnxruntime', 'bf16': 'openvino'}
    assert config['selection']['skipped'] == {'int8': 'no calibration images were given'}
    assert config['selection']['check_images'] == 4  # the photos alone without calibration data
    deployed = load(tmp_path / 'out')
    assert (deployed.precision, deployed.runtime) == ('bf16', 'openvino')


def test_auto_on_labelled_data_keeps_int8_within_half_a_point(fashion_model_dir, tmp_path, monkeypatch):
    _no_bf16_cpu(monkeypatch)
    timer = _made_up_timer({'fp32': 10.0, 'int8': 5.0})
    result = export(str(fashion_model_dir), tmp_path / 'out', calibration='fashion-mnist', calibration_samples=64,
                    evaluate='fashion-mnist', eval_samples=1000, timer=timer, progress=False)
    config = json.loads((tmp_path / 'out' / CONFIG_NAME).read_text())
    accuracy = config['selection']['evaluated_on']['accuracy']
    assert accuracy == result.accuracy and accuracy['fp32'] > 75
    # int8 is faster by the timer's account; it is chosen exactly when its accuracy holds
    holds = accuracy['int8'] >= accuracy['fp32'] - 0.5
    assert config['selection']['candidates']['int8']['accuracy_holds'] == holds
    assert result.precision == ('int8' if holds else 'fp32')


# ---------------------------------------------------------------------------------------------------- run

def test_run_gives_the_logits_predict_reports_and_predict_runs_one_batch(fashion_export, photos, tmp_path):
    deployed = load(fashion_export)
    paths = []
    for i, image in enumerate(photos):
        paths.append(tmp_path / f'{i}.png')
        image.save(paths[-1])
    logits = deployed.run(deployed.preprocess(paths))
    assert logits.shape == (len(paths), 10)

    calls = []
    runner = deployed._runner
    deployed._runner = lambda batch: calls.append(len(batch)) or runner(batch)
    predictions = deployed.predict(paths, top_k=10)
    assert calls == [len(paths)]  # the files ran together as one batch, not one by one
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(np.stack([p.probabilities for p in predictions]), probabilities, atol=1e-6)
    assert [p.index for p in predictions] == logits.argmax(1).tolist()


def test_run_refuses_anything_but_a_preprocessed_float32_batch(fashion_export):
    deployed = load(fashion_export)
    good = np.zeros((2, 3, FASHION_SIZE, FASHION_SIZE), np.float32)
    assert deployed.run(good).shape == (2, 10)
    bad = {
        'shape 2x3x20x20': np.zeros((2, 3, 20, 20), np.float32),
        'float64 array': good.astype(np.float64),
        'shape 3x32x32': good[0],
        'not contiguous': np.zeros((2, FASHION_SIZE, FASHION_SIZE, 3), np.float32).transpose(0, 3, 1, 2),
        'a Tensor': torch.zeros(2, 3, FASHION_SIZE, FASHION_SIZE),
        'shape 0x3x32x32': good[:0],
    }
    for found, batch in bad.items():
        with pytest.raises(InvalidArgumentError, match=rf'run\(\) takes a contiguous float32 numpy array of shape '
                                                       rf'Nx3x32x32 with N >= 1, not .*{found}') as raised:
            deployed.run(batch)
        assert '\n' not in str(raised.value)


def test_unknown_precision_is_refused(tmp_path, capsys, fashion_export, randomize_batchnorm):
    model = _model(randomize_batchnorm, 'se_resnet18', 32, **NARROW_RESNET)
    with pytest.raises(InvalidArgumentError, match=r"precision='fp16' is unknown; use one of auto, fp32, bf16, int8"):
        export(model, tmp_path / 'out', precision='fp16')
    with pytest.raises(InvalidArgumentError, match=r"precision='fp16' is not one of fp32, bf16, int8"):
        load(fashion_export, precision='fp16')
    with pytest.raises(InvalidArgumentError, match=r'has no bf16 model \(it holds fp32, int8\)'):
        load(fashion_export, precision='bf16')
    with pytest.raises(SystemExit) as exited:
        cli_main(['export', 'se_resnet18', str(tmp_path / 'out'), '--precision', 'fp16'])
    assert exited.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_deploy_submodules_are_not_shadowed():
    import se_zoo.deploy as deploy
    for name in ('exporting', 'evaluation', 'selection', 'runtime', 'timing'):
        assert importlib.import_module(f'se_zoo.deploy.{name}') is getattr(deploy, name)
    assert callable(deploy.export) and callable(deploy.evaluate)
