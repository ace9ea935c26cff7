"""Conformance battery: every se_zoo model behaves like a native timm model.

The checks follow what timm's own tests/test_models.py asserts for every timm model, run at 64x64 input
(MobileNet and EfficientNet need at least 32 px) with random weights and randomised BatchNorm statistics,
so that output comparisons run through every SE block.

Which models each check covers:
- every registered model (``se_zoo.list_models()``): forward with grad checkpointing, backward with
  num_classes=42, default cfg at the default input size (pool_size, num_features, first_conv/classifier),
  reset_classifier, num_classes=0 / global_pool='' at init, forward_head(pre_logits=True), get_classifier,
  group_matcher, features_only and out_indices against feature_info, forward_intermediates, in_chans,
  drop_rate / drop_path_rate, pretrained_cfg_overlay, TorchScript and torchvision FX;
- ``torch.compile(fullgraph=True)`` with the 'aot_eager' backend (dynamo + AOTAutograd tracing, so any graph
  break fails, without inductor's code generation): one model per distinct block implementation
  (``COMPILE_MODELS``); the other models repeat those blocks at another depth or width;
- ONNX export (torch.onnx.export's default dynamo exporter, dynamic batch) and onnxruntime parity at
  atol 1e-4: one model per family (``ONNX_MODELS``);
- TorchScript, FX and compile of the SE-ResNet ablation variants (placement, squeeze, gate, se_stages).
"""
import math
from typing import Any, Dict

import onnxruntime as ort
import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import DropPath, set_layer_config
from timm.models import FeatureGraphNet, group_parameters
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import se_zoo

MODEL_NAMES = se_zoo.list_models()
COMPILE_MODELS = (
    'se_resnet18', 'se_resnet50', 'se_resnext50_32x4d', 'se_mobilenet_v1_100', 'se_mobilenet_v2_050',
    'se_mobilenet_v3_small_100', 'se_mobilenet_v3_large_100', 'se_efficientnet_b0',
)
ONNX_MODELS = ('se_resnet50', 'se_mobilenet_v3_small_100', 'se_efficientnet_b0')
ABLATIONS = (
    dict(placement='pre'),
    dict(placement='post'),
    dict(placement='identity'),
    dict(squeeze='avgmax', gate='hard_sigmoid', se_act='silu', se_bias=False, se_stages=(2, 4)),
)

BATCH_SIZE = 2
SIZE = 64


def _input(in_chans: int = 3, batch_size: int = BATCH_SIZE, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, in_chans, size, size, generator=torch.Generator().manual_seed(seed))


def _head_hidden_size(model: nn.Module) -> int:
    # MobileNetV3's head has a conv after pooling, so its pre-logits width differs from num_features.
    return getattr(model, 'head_hidden_size', model.num_features)


def test_compile_and_onnx_subsets_are_registered():
    assert set(COMPILE_MODELS) <= set(MODEL_NAMES)
    assert set(ONNX_MODELS) <= set(MODEL_NAMES)


@pytest.fixture(scope='module', params=MODEL_NAMES)
def model_name(request) -> str:
    return request.param


@pytest.fixture(scope='module')
def eval_model(model_name, randomize_batchnorm) -> nn.Module:
    """The model with default arguments, BN randomised, in eval mode. Shared: tests must not modify it."""
    return randomize_batchnorm(timm.create_model(model_name)).eval()


def test_forward_and_grad_checkpointing(eval_model):
    x = _input().requires_grad_()
    out = eval_model(x)
    assert out.shape == (BATCH_SIZE, eval_model.pretrained_cfg['num_classes'])
    assert torch.isfinite(out).all()
    grad, = torch.autograd.grad(out.sum(), x)

    eval_model.set_grad_checkpointing(True)
    try:
        out_ckpt = eval_model(x)
        grad_ckpt, = torch.autograd.grad(out_ckpt.sum(), x)
    finally:
        eval_model.set_grad_checkpointing(False)
    torch.testing.assert_close(out_ckpt, out)
    torch.testing.assert_close(grad_ckpt, grad)


def test_backward_every_param_gets_grad(model_name):
    model = timm.create_model(model_name, num_classes=42).train()
    out = model(_input())
    assert out.shape == (BATCH_SIZE, 42)
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without a gradient: {no_grad}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_default_cfg(model_name, randomize_batchnorm):
    model = randomize_batchnorm(timm.create_model(model_name)).eval()
    cfg = model.pretrained_cfg
    state_dict = model.state_dict()

    # pool_size and num_features: forward_features at the default input size.
    with torch.inference_mode():
        features = model.forward_features(torch.randn(1, *cfg['input_size']))
    assert features.shape == (1, model.num_features, *cfg['pool_size'])

    # first_conv / classifier name real modules, and get_classifier returns that classifier.
    first_conv = model.get_submodule(cfg['first_conv'])
    assert isinstance(first_conv, nn.Conv2d) and first_conv.in_channels == cfg['input_size'][0]
    assert cfg['first_conv'] + '.weight' in state_dict
    classifier = model.get_submodule(cfg['classifier'])
    assert isinstance(classifier, nn.Linear) and classifier.out_features == cfg['num_classes']
    assert cfg['classifier'] + '.weight' in state_dict
    assert model.get_classifier() is classifier

    x = _input()
    with torch.no_grad():
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    assert pre_logits.shape == (BATCH_SIZE, _head_hidden_size(model))
    torch.testing.assert_close(classifier(pre_logits), logits)

    model.reset_classifier(0)
    assert not list(model.get_classifier().parameters())
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, pre_logits)

    model.reset_classifier(0, '')
    with torch.no_grad():
        out = model(x)
    assert out.ndim == 4 and out.shape[:2] == (BATCH_SIZE, _head_hidden_size(model))

    model.reset_classifier(7, 'avg')
    with torch.no_grad():
        assert model(x).shape == (BATCH_SIZE, 7)


def test_headless_at_init(model_name):
    x = _input()
    model = timm.create_model(model_name, num_classes=0, global_pool='').eval()
    with torch.no_grad():
        out = model(x)
    assert out.ndim == 4 and out.shape[:2] == (BATCH_SIZE, _head_hidden_size(model))

    model = timm.create_model(model_name, num_classes=0).eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (BATCH_SIZE, _head_hidden_size(model))


@pytest.mark.parametrize('coarse', [False, True])
def test_group_matcher_covers_every_parameter(eval_model, coarse):
    groups = group_parameters(eval_model, eval_model.group_matcher(coarse=coarse))
    grouped = [name for names in groups.values() for name in names]
    assert sorted(grouped) == sorted(n for n, _ in eval_model.named_parameters())
    assert len(groups) >= 3
    first, last = groups[min(groups)], groups[max(groups)]
    assert eval_model.pretrained_cfg['first_conv'] + '.weight' in first
    assert eval_model.pretrained_cfg['classifier'] + '.weight' in last


def test_forward_intermediates(eval_model):
    feature_info = eval_model.feature_info
    x = _input()
    with torch.no_grad():
        final, intermediates = eval_model.forward_intermediates(x)
        only = eval_model.forward_intermediates(x, intermediates_only=True)
        last_two = eval_model.forward_intermediates(x, indices=2, intermediates_only=True)
        features = eval_model.forward_features(x)
    assert len(intermediates) == len(feature_info) >= 3
    for info, t in zip(feature_info, intermediates):
        assert t.shape == (BATCH_SIZE, info['num_chs'], math.ceil(SIZE / info['reduction']),
                           math.ceil(SIZE / info['reduction']))
    torch.testing.assert_close(final, features)
    for a, b in zip(only, intermediates):
        torch.testing.assert_close(a, b)
    assert len(last_two) == 2
    torch.testing.assert_close(last_two[-1], intermediates[-1])


def _features_only(model_name: str, reference: nn.Module, **kwargs: Any) -> nn.Module:
    """A features_only model carrying the reference model's weights (its keys are a subset of them)."""
    model = timm.create_model(model_name, features_only=True, **kwargs).eval()
    reference_state = reference.state_dict()
    model.load_state_dict({k: reference_state[k] for k in model.state_dict()}, strict=True)
    return model


def test_features_only_matches_feature_info(model_name, eval_model):
    model = _features_only(model_name, eval_model)
    channels = [f['num_chs'] for f in eval_model.feature_info]
    reductions = [f['reduction'] for f in eval_model.feature_info]
    assert model.feature_info.channels() == channels
    assert model.feature_info.reduction() == reductions
    x = _input()
    with torch.no_grad():
        features = model(x)
        _, intermediates = eval_model.forward_intermediates(x)
    assert [f.shape[1] for f in features] == channels
    assert [f.shape[-1] for f in features] == [math.ceil(SIZE / r) for r in reductions]
    for f, t in zip(features, intermediates):
        torch.testing.assert_close(f, t)


def test_features_only_out_indices(model_name, eval_model):
    out_indices = (1, 3)
    model = _features_only(model_name, eval_model, out_indices=out_indices)
    info = [eval_model.feature_info[i] for i in out_indices]
    assert model.feature_info.channels() == [f['num_chs'] for f in info]
    assert model.feature_info.reduction() == [f['reduction'] for f in info]
    x = _input()
    with torch.no_grad():
        features = model(x)
        _, intermediates = eval_model.forward_intermediates(x, indices=list(out_indices))
    assert len(features) == len(out_indices)
    for f, t in zip(features, intermediates):
        torch.testing.assert_close(f, t)


@pytest.mark.parametrize('in_chans', [1, 5])
def test_in_chans(model_name, in_chans):
    model = timm.create_model(model_name, in_chans=in_chans, num_classes=10).eval()
    assert model.get_submodule(model.pretrained_cfg['first_conv']).in_channels == in_chans
    with torch.no_grad():
        assert model(_input(in_chans)).shape == (BATCH_SIZE, 10)


def test_drop_rate_and_drop_path_rate(model_name):
    x = _input()
    model = timm.create_model(model_name, drop_rate=0.5, drop_path_rate=0.2)
    drop_probs = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert drop_probs and 0 < max(drop_probs) <= 0.2
    assert model.drop_rate == 0.5
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x)), 'dropout and drop path must make training forwards differ'
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)

    plain = timm.create_model(model_name).train()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), plain(x), rtol=0, atol=0)


def test_pretrained_cfg_overlay(model_name):
    overlay = dict(input_size=(3, 96, 96), crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model = timm.create_model(model_name, pretrained_cfg_overlay=overlay)
    cfg = model.pretrained_cfg
    assert tuple(cfg['input_size']) == overlay['input_size'] and cfg['crop_pct'] == overlay['crop_pct']
    assert tuple(cfg['mean']) == overlay['mean'] and tuple(cfg['std']) == overlay['std']
    assert cfg['paper_ids'] == 'arXiv:1709.01507'  # the rest of the cfg is kept
    data_config = timm.data.resolve_data_config({}, model=model)
    assert data_config['input_size'] == (3, 96, 96) and data_config['crop_pct'] == 1.0


def _assert_torchscript_equal(model_name: str, randomize_batchnorm, **kwargs: Any) -> None:
    with set_layer_config(scriptable=True):
        model = randomize_batchnorm(timm.create_model(model_name, **kwargs)).eval()
    scripted = torch.jit.script(model)
    x = _input()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def _assert_fx_equal(model: nn.Module) -> None:
    x = _input()
    _, eval_nodes = get_graph_node_names(model)
    fx_model = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    with torch.no_grad():
        fx_out, = fx_model(x).values()
        torch.testing.assert_close(fx_out, model(x), rtol=0, atol=0)


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated')
def test_torchscript(model_name, randomize_batchnorm):
    _assert_torchscript_equal(model_name, randomize_batchnorm)


def test_fx_equals_eager(eval_model):
    _assert_fx_equal(eval_model)


def test_fx_feature_extraction_equals_intermediates(eval_model):
    fx_features = FeatureGraphNet(eval_model, out_indices=tuple(range(len(eval_model.feature_info))))
    x = _input()
    with torch.no_grad():
        features = fx_features(x)
        _, intermediates = eval_model.forward_intermediates(x)
    assert len(features) == len(intermediates)
    for f, t in zip(features, intermediates):
        torch.testing.assert_close(f, t, rtol=0, atol=0)


def _assert_compile_fullgraph_equal(model: nn.Module) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)  # any graph break raises
    x = _input()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    torch._dynamo.reset()


@pytest.mark.parametrize('name', COMPILE_MODELS)
def test_compile_fullgraph(name, randomize_batchnorm):
    _assert_compile_fullgraph_equal(randomize_batchnorm(timm.create_model(name)).eval())


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated')
@pytest.mark.parametrize('kwargs', ABLATIONS, ids=lambda kw: '-'.join(f'{k}={v}' for k, v in kw.items()))
def test_ablation_variants_script_fx_compile(kwargs: Dict[str, Any], randomize_batchnorm):
    _assert_torchscript_equal('se_resnet18', randomize_batchnorm, **kwargs)
    model = randomize_batchnorm(timm.create_model('se_resnet18', **kwargs)).eval()
    _assert_fx_equal(model)
    _assert_compile_fullgraph_equal(model)


@pytest.mark.parametrize('name', ONNX_MODELS)
def test_onnx_export_onnxruntime_parity(name, randomize_batchnorm, tmp_path):
    model = randomize_batchnorm(timm.create_model(name)).eval()
    path = tmp_path / f'{name}.onnx'
    # The default exporter (torch.export based); batch is dynamic so one export serves any batch size.
    torch.onnx.export(
        model, (_input(),), str(path), dynamo=True, input_names=['x'], output_names=['logits'],
        dynamic_shapes={'x': {0: torch.export.Dim('batch')}}, verbose=False)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = _input(batch_size=3, seed=1)
    logits, = session.run(['logits'], {'x': x.numpy()})
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=0, atol=1e-4)
