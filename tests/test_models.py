"""Conformance battery: every se_zoo model behaves like a native timm model.

The checks follow what timm's own tests/test_models.py asserts for every timm model. Value checks run at 64x64
input (MobileNet and EfficientNet need at least 32 px) with random weights and randomised BatchNorm statistics,
so that output comparisons run through every SE block. Checks that are about shapes only run on the meta device
(no weight init, no compute), which makes them free at any input size, the default one included.

Which models each check covers:
- every registered model (``se_zoo.list_models()``), real tensors: forward with grad checkpointing, backward
  with num_classes=42, forward_head(pre_logits=True) and get_classifier, group_matcher, features_only against
  feature_info and forward_intermediates, forward_intermediates against forward_features, drop_rate and
  drop_path_rate, TorchScript (scripted under ``set_layer_config(scriptable=True)``, equal outputs) and
  torchvision FX (traced whole model bit-equal to eager, traced and run under no_grad as timm's test does);
- every registered model, meta device: pool_size and num_features at the default input size, first_conv /
  classifier naming real modules, reset_classifier, num_classes=0 / global_pool='' at init, out_indices,
  in_chans, pretrained_cfg_overlay;
- one model per distinct block implementation (``REPRESENTATIVES``; the other models repeat those blocks at
  another depth or width): FX feature extraction (timm's ``FeatureGraphNet``) bit-equal to
  forward_intermediates, and ``torch.compile(fullgraph=True)`` with the 'aot_eager' backend (dynamo +
  AOTAutograd tracing, so a graph break fails, without inductor's code generation); the SE-ResNet ablation
  variants (placement, squeeze, gate, se_stages) through TorchScript, FX and compile;
- ONNX export with torch.onnx.export's default exporter (dynamo, dynamic batch) and onnxruntime parity at
  atol 1e-4: one model per family (``ONNX_MODELS``).
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
REPRESENTATIVES = (
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


def test_subsets_are_registered():
    assert set(REPRESENTATIVES) <= set(MODEL_NAMES)
    assert set(ONNX_MODELS) <= set(MODEL_NAMES)


@pytest.fixture(scope='module', params=MODEL_NAMES)
def model_name(request) -> str:
    return request.param


@pytest.fixture(scope='module')
def eval_model(model_name, randomize_batchnorm) -> nn.Module:
    """The model with default arguments, BN randomised, in eval mode. Shared: tests must not modify it."""
    return randomize_batchnorm(timm.create_model(model_name)).eval()


@pytest.fixture(scope='module', params=REPRESENTATIVES)
def representative(request, randomize_batchnorm) -> nn.Module:
    """A representative model, BN randomised, in eval mode. Shared: tests must not modify it."""
    return randomize_batchnorm(timm.create_model(request.param)).eval()


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
    assert torch.isfinite(out).all()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without a gradient: {no_grad}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def _meta_model(name: str, **kwargs: Any) -> nn.Module:
    return timm.create_model(name, device='meta', **kwargs).eval()


def _meta_input(in_chans: int = 3, size: int = SIZE) -> torch.Tensor:
    return torch.empty(BATCH_SIZE, in_chans, size, size, device='meta')


def test_default_cfg(model_name):
    model = _meta_model(model_name)
    cfg = model.pretrained_cfg
    state_dict = model.state_dict()

    # pool_size and num_features: forward_features at the default input size.
    features = model.forward_features(_meta_input(size=cfg['input_size'][-1]))
    assert features.shape == (BATCH_SIZE, model.num_features, *cfg['pool_size'])

    # first_conv / classifier name real modules, and get_classifier returns that classifier.
    first_conv = model.get_submodule(cfg['first_conv'])
    assert isinstance(first_conv, nn.Conv2d) and first_conv.in_channels == cfg['input_size'][0]
    assert cfg['first_conv'] + '.weight' in state_dict
    classifier = model.get_submodule(cfg['classifier'])
    assert isinstance(classifier, nn.Linear) and classifier.out_features == cfg['num_classes']
    assert cfg['classifier'] + '.weight' in state_dict
    assert model.get_classifier() is classifier

    model.reset_classifier(0)
    assert not list(model.get_classifier().parameters())
    assert model(_meta_input()).shape == (BATCH_SIZE, _head_hidden_size(model))

    model.reset_classifier(0, '')
    out = model(_meta_input())
    assert out.ndim == 4 and out.shape[:2] == (BATCH_SIZE, _head_hidden_size(model))

    model.reset_classifier(7, 'avg')
    assert model(_meta_input()).shape == (BATCH_SIZE, 7)


def test_forward_head_pre_logits(eval_model):
    x = _input()
    with torch.no_grad():
        pre_logits = eval_model.forward_head(eval_model.forward_features(x), pre_logits=True)
        logits = eval_model(x)
        assert pre_logits.shape == (BATCH_SIZE, _head_hidden_size(eval_model))
        torch.testing.assert_close(eval_model.get_classifier()(pre_logits), logits)


def test_headless_at_init(model_name):
    model = _meta_model(model_name, num_classes=0, global_pool='')
    out = model(_meta_input())
    assert out.ndim == 4 and out.shape[:2] == (BATCH_SIZE, _head_hidden_size(model))

    model = _meta_model(model_name, num_classes=0)
    assert model(_meta_input()).shape == (BATCH_SIZE, _head_hidden_size(model))


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
    model = _meta_model(model_name, features_only=True, out_indices=out_indices)
    info = [eval_model.feature_info[i] for i in out_indices]
    assert model.feature_info.channels() == [f['num_chs'] for f in info]
    assert model.feature_info.reduction() == [f['reduction'] for f in info]
    features = model(_meta_input())
    assert [f.shape[1:] for f in features] == [
        (f['num_chs'], math.ceil(SIZE / f['reduction']), math.ceil(SIZE / f['reduction'])) for f in info]


@pytest.mark.parametrize('in_chans', [1, 5])
def test_in_chans(model_name, in_chans):
    model = _meta_model(model_name, in_chans=in_chans, num_classes=10)
    assert model.get_submodule(model.pretrained_cfg['first_conv']).in_channels == in_chans
    assert model(_meta_input(in_chans)).shape == (BATCH_SIZE, 10)


def test_drop_rate_and_drop_path_rate(model_name):
    x = _input()
    model = timm.create_model(model_name, drop_rate=0.5, drop_path_rate=0.2)
    drop_paths = [m for m in model.modules() if isinstance(m, DropPath)]
    assert drop_paths and 0 < max(m.drop_prob for m in drop_paths) <= 0.2
    assert model.drop_rate == 0.5
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x)), 'dropout and drop path must make training forwards differ'
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        # Control: with both rates zeroed, training forwards agree, so the difference above was the dropping.
        model.drop_rate = 0.
        for m in drop_paths:
            m.drop_prob = 0.
        model.train()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_pretrained_cfg_overlay(model_name):
    overlay = dict(input_size=(3, 96, 96), crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model = _meta_model(model_name, pretrained_cfg_overlay=overlay)
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
    # As timm's test does, trace and run under no_grad: a trace records the grad-mode-dependent path it saw.
    with torch.no_grad():
        _, eval_nodes = get_graph_node_names(model)
        fx_model = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
        fx_out, = fx_model(x).values()
        torch.testing.assert_close(fx_out, model(x), rtol=0, atol=0)


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated')
def test_torchscript(model_name, randomize_batchnorm):
    _assert_torchscript_equal(model_name, randomize_batchnorm)


def test_fx_equals_eager(eval_model):
    _assert_fx_equal(eval_model)


def test_fx_feature_extraction_equals_intermediates(representative):
    x = _input()
    with torch.no_grad():
        fx_features = FeatureGraphNet(representative, out_indices=tuple(range(len(representative.feature_info))))
        features = fx_features(x)
        _, intermediates = representative.forward_intermediates(x)
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


def test_compile_fullgraph(representative):
    _assert_compile_fullgraph_equal(representative)


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
