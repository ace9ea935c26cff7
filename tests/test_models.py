"""Conformance battery: every se_zoo model behaves like a native timm model.

The checks follow what timm's own tests/test_models.py asserts for every timm model. Value checks run at 64x64
input (or a network's declared minimum) with random weights and randomised BatchNorm statistics, so that output
comparisons run through every SE block.

Which models each check covers:
- one model per block structure (``REPRESENTATIVES``, derived from the registry in tests/test_models_meta.py: of
  the networks built from the same blocks, the one with the fewest parameters; a new block type is covered as
  soon as it is registered, a new width or depth of existing blocks adds nothing), real tensors: forward with grad
  checkpointing, backward with num_classes=42, forward_head(pre_logits=True) and get_classifier, features_only
  against feature_info and forward_intermediates, forward_intermediates against forward_features, drop_rate and
  drop_path_rate, TorchScript (scripted under ``set_layer_config(scriptable=True)``, equal outputs), torchvision
  FX (traced whole model bit-equal to eager, traced and run under no_grad as timm's test does), FX feature
  extraction (timm's ``FeatureGraphNet``) bit-equal to forward_intermediates, and, on one network per way SE
  is inserted (``COMPILE_MODELS``), ``torch.compile(fullgraph=True)`` with the 'aot_eager' backend (dynamo +
  AOTAutograd tracing, so a graph break fails, without inductor's code generation);
- every registered model and every pretrained tag, on the meta device: tests/test_models_meta.py;
- the SE-ResNet ablation variants (placement, squeeze, gate, se_stages) through TorchScript, FX and compile;
- ONNX export (torch.onnx.export's dynamo exporter, dynamic batch) against PyTorch on photos at batch 1 and 3,
  one network per family: tests/test_deploy.py, through ``se_zoo.deploy.export``, which makes that call.
"""
from typing import Any, Dict

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import DropPath, set_layer_config
from timm.models import FeatureGraphNet
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import se_zoo
from test_models_meta import (
    REPRESENTATIVES, expected_sizes, head_hidden_size, input_size, one_worker_per_architecture, reference_key)

MODEL_NAMES = se_zoo.list_models()
# One network per way se_zoo puts SE into timm's blocks: its own residual blocks, byobnet's attention slot, the
# MBConv builder's se_layer, and the Inception module wrapper. Dynamo traces the same se_zoo code in every other
# network of a family, and tracing one costs 5-30 s here, so the other representatives are left to TorchScript and
# FX, which script and trace each of them.
COMPILE_MODELS = ('se_resnet18', 'se_resnext26ts', 'se_mobilenet_v3_small_050', 'se_efficientnet_b0',
                  'se_inception_v3')
ABLATIONS = (
    dict(placement='pre'),
    dict(placement='post'),
    dict(placement='identity'),
    dict(squeeze='avgmax', gate='hard_sigmoid', se_act='silu', se_bias=False, se_stages=(2, 4)),
)

BATCH_SIZE = 2
SIZE = 64
# Representatives whose only members are deep get one block per stage here: the checks below look at each kind of
# block, stem and head, which a shallower network of the same keywords still has, and tracing or scripting a
# 154-layer network costs minutes on a 2-core machine for nothing more.
SHALLOW = {name: dict(layers=(1, 1, 1, 1)) for name in ('se_senet154', 'se_resnextaa101d_32x8d', 'se_resnetrs50')}


def _create(model_name: str, **kwargs: Any) -> nn.Module:
    return timm.create_model(model_name, **SHALLOW.get(model_name, {}), **kwargs)


def _input(in_chans: int = 3, batch_size: int = BATCH_SIZE, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, in_chans, size, size, generator=torch.Generator().manual_seed(seed))


def _model_input(model: nn.Module, **kwargs: Any) -> torch.Tensor:
    return _input(size=input_size(model), **kwargs)


def test_subsets_are_registered():
    assert set(REPRESENTATIVES) <= set(MODEL_NAMES)
    assert set(COMPILE_MODELS) <= set(REPRESENTATIVES)


@pytest.fixture(scope='module', params=one_worker_per_architecture(REPRESENTATIVES))
def model_name(request) -> str:
    return request.param


@pytest.fixture(scope='module')
def eval_model(model_name, randomize_batchnorm) -> nn.Module:
    """The representative with default arguments, BN randomised, in eval mode. Shared: tests must not modify it."""
    return randomize_batchnorm(_create(model_name)).eval()


def test_forward_and_grad_checkpointing(eval_model):
    x = _model_input(eval_model).requires_grad_()
    out = eval_model(x)
    assert out.shape == (BATCH_SIZE, eval_model.pretrained_cfg['num_classes'])
    assert torch.isfinite(out).all()
    grad, = torch.autograd.grad(out.sum(), x)

    try:
        eval_model.set_grad_checkpointing(True)
    except AssertionError as e:  # timm's Inception networks refuse it, by an assert
        assert 'not supported' in str(e)
        return
    try:
        out_ckpt = eval_model(x)
        grad_ckpt, = torch.autograd.grad(out_ckpt.sum(), x)
    finally:
        eval_model.set_grad_checkpointing(False)
    torch.testing.assert_close(out_ckpt, out)
    torch.testing.assert_close(grad_ckpt, grad)


def test_backward_every_param_gets_grad(model_name):
    model = _create(model_name, num_classes=42).train()
    out = model(_model_input(model))
    assert out.shape == (BATCH_SIZE, 42)
    assert torch.isfinite(out).all()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without a gradient: {no_grad}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_forward_head_pre_logits(eval_model):
    x = _model_input(eval_model)
    with torch.no_grad():
        pre_logits = eval_model.forward_head(eval_model.forward_features(x), pre_logits=True)
        logits = eval_model(x)
        assert pre_logits.shape == (BATCH_SIZE, head_hidden_size(eval_model))
        torch.testing.assert_close(eval_model.get_classifier()(pre_logits), logits)


def test_forward_intermediates(eval_model):
    feature_info = eval_model.feature_info
    size = input_size(eval_model)
    x = _model_input(eval_model)
    with torch.no_grad():
        final, intermediates = eval_model.forward_intermediates(x)
        only = eval_model.forward_intermediates(x, intermediates_only=True)
        last_two = eval_model.forward_intermediates(x, indices=2, intermediates_only=True)
        features = eval_model.forward_features(x)
    assert len(intermediates) == len(feature_info) >= 3
    for info, t in zip(feature_info, intermediates):
        assert t.shape[:2] == (BATCH_SIZE, info['num_chs']) and t.shape[-1] == t.shape[-2]
        assert t.shape[-1] in expected_sizes(eval_model, size, info['reduction'])
    torch.testing.assert_close(final, features)
    for a, b in zip(only, intermediates):
        torch.testing.assert_close(a, b)
    assert len(last_two) == 2
    torch.testing.assert_close(last_two[-1], intermediates[-1])


def _features_only(model_name: str, reference: nn.Module, **kwargs: Any) -> nn.Module:
    """A features_only model carrying the reference model's weights (its keys are a subset of them)."""
    model = _create(model_name, features_only=True, **kwargs).eval()
    reference_state = reference.state_dict()
    model.load_state_dict({k: reference_state[reference_key(k, reference_state)] for k in model.state_dict()},
                          strict=True)
    return model


def test_features_only_matches_feature_info(model_name, eval_model):
    model = _features_only(model_name, eval_model)
    channels = [f['num_chs'] for f in eval_model.feature_info]
    reductions = [f['reduction'] for f in eval_model.feature_info]
    assert model.feature_info.channels() == channels
    assert model.feature_info.reduction() == reductions
    size = input_size(eval_model)
    x = _model_input(eval_model)
    with torch.no_grad():
        features = model(x)
        _, intermediates = eval_model.forward_intermediates(x)
    assert [f.shape[1] for f in features] == channels
    assert all(f.shape[-1] in expected_sizes(eval_model, size, r) for f, r in zip(features, reductions))
    assert len(features) == len(intermediates)
    for f, t in zip(features, intermediates):
        torch.testing.assert_close(f, t)


def test_drop_rate_and_drop_path_rate(model_name):
    try:
        model = _create(model_name, drop_rate=0.5, drop_path_rate=0.2)
    except TypeError as e:  # a network without stochastic depth (timm's Inception) does not take the keyword
        assert 'drop_path_rate' in str(e)
        model = _create(model_name, drop_rate=0.5)
        drop_paths = []
    else:
        drop_paths = [m for m in model.modules() if isinstance(m, DropPath)]
        # no block exceeds the rate (timm's linspace yields a float32 0.2, hence the margin)
        assert drop_paths and 0 < max(m.drop_prob for m in drop_paths) <= 0.2 + 1e-6
    # The head's dropout: timm's ResNet and EfficientNet apply F.dropout with model.drop_rate, byobnet and the
    # Inception networks an nn.Dropout module in their head.
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert getattr(model, 'drop_rate', None) == 0.5 or [m.p for m in dropouts] == [0.5]
    x = _model_input(model)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x)), 'dropout and drop path must make training forwards differ'
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        # Control: with both rates zeroed, training forwards agree, so the difference above was the dropping.
        model.drop_rate = 0.
        for m in drop_paths:
            m.drop_prob = 0.
        for m in dropouts:
            m.p = 0.
        model.train()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def _assert_torchscript_equal(model_name: str, randomize_batchnorm, **kwargs: Any) -> None:
    with set_layer_config(scriptable=True):
        model = randomize_batchnorm(_create(model_name, **kwargs)).eval()
    scripted = torch.jit.script(model)
    x = _model_input(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def _assert_fx_equal(model: nn.Module) -> None:
    x = _model_input(model)
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


def test_fx_feature_extraction_equals_intermediates(eval_model):
    x = _model_input(eval_model)
    with torch.no_grad():
        fx_features = FeatureGraphNet(eval_model, out_indices=tuple(range(len(eval_model.feature_info))))
        features = fx_features(x)
        _, intermediates = eval_model.forward_intermediates(x)
    assert len(features) == len(intermediates)
    for f, t in zip(features, intermediates):
        torch.testing.assert_close(f, t, rtol=0, atol=0)


def _assert_compile_fullgraph_equal(model: nn.Module) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)  # any graph break raises
    x = _model_input(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    torch._dynamo.reset()


@pytest.mark.parametrize('name', one_worker_per_architecture(COMPILE_MODELS))
def test_compile_fullgraph(name, randomize_batchnorm):
    _assert_compile_fullgraph_equal(randomize_batchnorm(_create(name)).eval())


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated')
@pytest.mark.parametrize('kwargs', ABLATIONS, ids=lambda kw: '-'.join(f'{k}={v}' for k, v in kw.items()))
def test_ablation_variants_script_fx_compile(kwargs: Dict[str, Any], randomize_batchnorm):
    kwargs = dict(kwargs, layers=(1, 1, 1, 1))  # a variant changes the SE blocks alone: one block per stage shows it
    _assert_torchscript_equal('se_resnet18', randomize_batchnorm, **kwargs)
    model = randomize_batchnorm(timm.create_model('se_resnet18', **kwargs)).eval()
    _assert_fx_equal(model)
    _assert_compile_fullgraph_equal(model)
