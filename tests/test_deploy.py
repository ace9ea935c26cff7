"""se_zoo.deploy: ONNX export checked on real photos, int8 accuracy on real Fashion-MNIST images, the sidecar round
trip, and the errors a user gets (through the command line: message and exit status 2).

Small networks at small sizes keep the file to about a minute per worker; speed is measured in
benchmarks/bench_deploy.py, never here.
"""
import importlib
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

from se_zoo.deploy import ExportMismatchError, evaluate, export, load  # noqa: E402
from se_zoo.deploy.config import CONFIG_NAME  # noqa: E402
from se_zoo.deploy.datasets import FASHION_MNIST_CLASSES, calibration_dataset, evaluation_dataset  # noqa: E402
from se_zoo.deploy.quantize import se_nodes, spatial_means_as_pools  # noqa: E402
from se_zoo_cli import main as cli_main  # noqa: E402

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


def _photo_inputs(photos, model: nn.Module) -> torch.Tensor:
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    return torch.stack([transform(p) for p in photos])


def _cli(argv: List[str], capsys) -> Tuple[int, str, str]:
    """``se-zoo ARGV``: its exit status, stdout and stderr."""
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------------- export

@pytest.mark.parametrize('family', list(FAMILIES))
def test_export_matches_pytorch_on_photos_at_batch_1_and_3(family, tmp_path, photos, randomize_batchnorm):
    name, kwargs, size = FAMILIES[family]
    model = _model(randomize_batchnorm, name, size, **kwargs)
    result = export(model, tmp_path / 'out')

    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [CONFIG_NAME, 'model.onnx']
    graph = onnx.load(str(result.files['fp32'])).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField('dim_value'), 'the batch dimension must be symbolic'

    x = _photo_inputs(photos, model)
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
    export_module = importlib.import_module('se_zoo.deploy.export')  # the module, not the function it exports
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
        export(model, tmp_path / 'out')
    assert list(tmp_path.iterdir()) == []

    # An earlier export being replaced stays as it was.
    earlier = tmp_path / 'earlier'
    earlier.mkdir()
    (earlier / CONFIG_NAME).write_text('{"format": "earlier"}')
    with pytest.raises(ExportMismatchError):
        export(model, earlier, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['earlier']
    assert (earlier / CONFIG_NAME).read_text() == '{"format": "earlier"}'


def test_tolerance_zero_refuses_what_float_rounding_alone_changes(tmp_path, randomize_batchnorm):
    model = _model(randomize_batchnorm, 'se_resnet18', 32, **NARROW_RESNET)
    with pytest.raises(ExportMismatchError, match='allowed 0'):
        export(model, tmp_path / 'out', tolerance=0.0)
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------------------------------------------- int8

def _train_fashion_model(steps: int = 300, batch: int = 64) -> nn.Module:
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
    """The trained model exported with int8, calibrated on the default 256 Fashion-MNIST training images (once per
    run)."""
    root = _run_dir(tmp_path_factory)
    folder = root / 'deploy_fashion_export'
    with FileLock(str(root / 'deploy_fashion_export.lock')):
        if not (folder / CONFIG_NAME).is_file():
            export(str(fashion_model_dir), folder, int8=True, calibration='fashion-mnist', progress=False)
    return folder


def _torch_model(folder: Path) -> nn.Module:
    from se_zoo.models._factory import load_model
    return load_model(str(folder)).eval()


def test_int8_accuracy_within_half_a_point_of_fp32_on_fashion_mnist(fashion_export, fashion_model_dir):
    config = json.loads((fashion_export / CONFIG_NAME).read_text())
    assert config['files'] == {'fp32': 'model.onnx', 'int8': 'model.int8.onnx'}
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
        expected = model(_photo_inputs(images, model)).softmax(1).numpy()

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
    code, stdout, _ = _cli(['export', str(fashion_model_dir), str(out), '--int8', '--calibration', 'fashion-mnist',
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
    code, _, err = _cli(['export', 'se_resnet18', str(tmp_path / 'out'), '--int8'], capsys)
    assert code == 2 and 'int8 needs calibration images' in err

    empty = tmp_path / 'calibration'
    (empty / 'cats').mkdir(parents=True)
    (empty / 'cats' / 'readme.txt').write_text('no images here')
    code, _, err = _cli(['export', 'se_resnet18', str(tmp_path / 'out'), '--int8', '--calibration', str(empty)],
                        capsys)
    assert code == 2 and 'holds no images' in err

    code, _, err = _cli(['export', 'se_resnet18', str(tmp_path / 'out'), '--int8', '--calibration',
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
        export(model, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()
    code, _, err = _cli(['export', 'se_resnet18', str(tmp_path / 'out')], capsys)
    assert code == 2 and "se-zoo[deploy]" in err
