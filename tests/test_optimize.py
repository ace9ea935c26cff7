"""``se_zoo.optimize_for_inference`` and the fast SE paths compute the reference function: outputs and gradients,
train and eval, both memory formats.

The fast path is what ``timm.utils.reparameterize_model`` switches SE-ResNet blocks to (``block.reparameterize()``);
the reference is the default path (``x * gate``, then ``+ shortcut``, squeezing the
full feature map). With autograd on in train mode the fast path keeps the reference's rounding, so training is
compared bit for bit; the eval-mode rewrites (squeeze through conv3, addcmul epilogue) round differently and are
compared to float32 tolerance. Speed is measured in benchmarks/bench_se.py, never here.
"""
import copy

import pytest
import timm
import torch
import torch.nn as nn

from timm.utils import reparameterize_model

import se_zoo
from se_zoo.models.se_resnet import SEBottleneck
from se_zoo.squeeze_excite import SqueezeExcite

MEMORY_FORMATS = (torch.contiguous_format, torch.channels_last)

# One small network per block type; one block per stage keeps every test under a second or two.
RESNET_CASES = {
    'basic': ('se_resnet18', dict(layers=(1, 1, 1, 1))),
    'bottleneck': ('se_resnet50', dict(layers=(1, 1, 1, 1))),
    'grouped': ('se_resnext50_32x4d', dict(layers=(1, 1, 1, 1))),
}

# The MobileNet / EfficientNet families (timm's blocks call the SE layer; its fast path is the inline mean).
MBCONV_MODELS = ('se_mobilenet_v1_100', 'se_mobilenet_v2_050', 'se_mobilenet_v3_small_100', 'se_efficientnet_b0')

# One network per family for optimize_for_inference.
FAMILY_MODELS = (
    'se_resnet18', 'se_resnet50', 'se_resnext50_32x4d', 'se_mobilenet_v1_100', 'se_mobilenet_v2_050',
    'se_mobilenet_v3_small_100', 'se_mobilenet_v3_large_100', 'se_efficientnet_b0',
)


def _fused_and_reference(randomize_batchnorm, name, **kwargs):
    torch.manual_seed(0)
    reference = randomize_batchnorm(timm.create_model(name, num_classes=10, **kwargs))
    fused = reparameterize_model(reference)  # a copy; the reference keeps the default path
    se_blocks = [m for m in fused.modules() if hasattr(m, 'fused_se')]
    assert se_blocks and all(m.fused_se for m in se_blocks), 'timm\'s reparameterize_model switches every SE block'
    assert not any(m.fused_se for m in reference.modules() if hasattr(m, 'fused_se')), \
        'the bit-exact reference path is the default'
    return fused, reference


def _inputs(batch, size, memory_format):
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    return x.contiguous(memory_format=memory_format)


def _assert_same_step(fused, reference, x, atol, rtol):
    """Forward + backward of both paths from the same RNG state; outputs and every gradient must agree."""
    outputs = []
    for model in (fused, reference):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(2)  # same DropPath masks for both paths
        out = model(x)
        out.square().mean().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[0], outputs[1], atol=atol, rtol=rtol)
    for (name, p_fused), p_reference in zip(fused.named_parameters(), reference.parameters()):
        assert p_fused.grad is not None, name
        torch.testing.assert_close(p_fused.grad, p_reference.grad, atol=atol, rtol=rtol, msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('memory_format', MEMORY_FORMATS, ids=('contiguous', 'channels_last'))
@pytest.mark.parametrize('placement', ('standard', 'identity'))
@pytest.mark.parametrize('case', RESNET_CASES)
def test_train_mode_fast_path_is_bit_exact(randomize_batchnorm, case, placement, memory_format):
    name, kwargs = RESNET_CASES[case]
    fused, reference = _fused_and_reference(
        randomize_batchnorm, name, placement=placement, drop_path_rate=0.2, **kwargs)
    fused.train(), reference.train()
    _assert_same_step(fused, reference, _inputs(4, 64, memory_format), atol=0, rtol=0)
    # the running statistics BN collected along the way agree too
    for (name, b_fused), b_reference in zip(fused.named_buffers(), reference.buffers()):
        torch.testing.assert_close(b_fused, b_reference, atol=0, rtol=0, msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('memory_format', MEMORY_FORMATS, ids=('contiguous', 'channels_last'))
@pytest.mark.parametrize('case, placement, squeeze', [
    *((case, placement, 'avg') for case in RESNET_CASES for placement in ('standard', 'identity')),
    ('bottleneck', 'standard', 'max'),  # not linear: the full map is squeezed, only the epilogue is fused
])
def test_eval_mode_fast_path_matches_reference(randomize_batchnorm, case, placement, squeeze, memory_format):
    """Eval mode with autograd (frozen-BN fine-tuning) and without (inference: the epilogue written in place)."""
    name, kwargs = RESNET_CASES[case]
    fused, reference = _fused_and_reference(randomize_batchnorm, name, placement=placement, squeeze=squeeze, **kwargs)
    fused.eval(), reference.eval()
    x = _inputs(2, 64, memory_format)
    _assert_same_step(fused, reference, x, atol=1e-5, rtol=1e-4)
    with torch.inference_mode():
        out_fused, out_reference = fused(x), reference(x)
    assert out_fused.is_contiguous(memory_format=memory_format) or out_fused.dim() == 2
    torch.testing.assert_close(out_fused, out_reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('memory_format', MEMORY_FORMATS, ids=('contiguous', 'channels_last'))
@pytest.mark.parametrize('name', MBCONV_MODELS)
def test_mbconv_families_fast_path_matches_reference(monkeypatch, randomize_batchnorm, name, memory_format):
    """Reference: the squeeze module called as a module (``linear_squeeze`` off), against the inline mean."""
    torch.manual_seed(0)
    fused = randomize_batchnorm(timm.create_model(name, num_classes=10))
    reference = copy.deepcopy(fused)
    x = _inputs(2, 64, memory_format)
    for mode in ('train', 'eval'):  # the same op either way: bit-exact
        outputs, grads = [], []
        for model, linear in ((fused, True), (reference, False)):
            getattr(model, mode)()
            model.zero_grad(set_to_none=True)
            with monkeypatch.context() as patch:
                if not linear:
                    patch.setattr(SqueezeExcite, 'linear_squeeze', property(lambda self: False))
                out = model(x)
            out.square().mean().backward()
            outputs.append(out)
            grads.append([p.grad for p in model.parameters()])
        torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)
        for g_fused, g_reference in zip(*grads):
            torch.testing.assert_close(g_fused, g_reference, atol=0, rtol=0)


def test_fast_path_on_real_photos_keeps_the_prediction(randomize_batchnorm, photo_batch):
    fused, reference = _fused_and_reference(randomize_batchnorm, 'se_resnet50')
    fused.eval(), reference.eval()
    x = photo_batch(160, fused)
    with torch.inference_mode():
        out_fused, out_reference = fused(x), reference(x)
    torch.testing.assert_close(out_fused, out_reference, atol=1e-5, rtol=1e-4)
    assert torch.equal(out_fused.argmax(1), out_reference.argmax(1))


def test_gate_hook_sees_the_same_excitations_on_both_paths(randomize_batchnorm):
    """``se.gate`` stays a module call on the fast path, so forward hooks on it read every excitation."""
    fused, reference = _fused_and_reference(randomize_batchnorm, *RESNET_CASES['bottleneck'][:1],
                                            **RESNET_CASES['bottleneck'][1])
    seen = {}
    for tag, model in (('fused', fused), ('reference', reference)):
        model.eval()
        for name, module in model.named_modules():
            if name.endswith('se.gate'):
                module.register_forward_hook(lambda m, i, o, key=(tag, name): seen.__setitem__(key, o.detach()))
        with torch.no_grad():
            model(_inputs(2, 64, torch.channels_last))
    fused_keys = sorted(k for k in seen if k[0] == 'fused')
    assert len(fused_keys) == 4
    for _, name in fused_keys:
        assert seen['fused', name].shape[2:] == (1, 1)
        torch.testing.assert_close(seen['fused', name], seen['reference', name], atol=1e-6, rtol=1e-5)


def test_scripted_fast_path_matches_eager(randomize_batchnorm):
    fused, reference = _fused_and_reference(randomize_batchnorm, 'se_resnet50', **RESNET_CASES['bottleneck'][1])
    fused.eval(), reference.eval()
    with timm.layers.set_layer_config(scriptable=True):
        scripted = torch.jit.script(fused)
    x = _inputs(2, 64, torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), reference(x), atol=1e-5, rtol=1e-4)


def test_fx_traced_fast_path_matches_eager(randomize_batchnorm):
    """timm's FX feature extraction traces the fused path under no_grad (its epilogue must not branch on proxies)."""
    from timm.models import create_feature_extractor
    fused, reference = _fused_and_reference(randomize_batchnorm, 'se_resnet50', **RESNET_CASES['bottleneck'][1])
    fused.eval(), reference.eval()
    x = _inputs(2, 64, torch.channels_last)
    with torch.no_grad():
        traced = create_feature_extractor(fused, {'layer4': 'out'})
        torch.testing.assert_close(traced(x)['out'], reference.forward_features(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name', FAMILY_MODELS)
def test_optimize_for_inference_matches_unoptimised(randomize_batchnorm, photo_batch, name):
    model = randomize_batchnorm(timm.create_model(name))
    model.train()
    optimized = se_zoo.optimize_for_inference(model)

    assert not optimized.training
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in optimized.modules()), 'BN left unfolded'
    assert model.training and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), 'input model modified'
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in optimized.parameters() if p.dim() == 4)

    x = photo_batch(96, model)
    with torch.inference_mode():
        expected = model.eval()(x)
        for memory_format in MEMORY_FORMATS:
            torch.testing.assert_close(optimized(x.contiguous(memory_format=memory_format)), expected,
                                       atol=1e-4, rtol=0)


def test_optimize_for_inference_keeps_the_timm_api(randomize_batchnorm):
    model = randomize_batchnorm(timm.create_model('se_resnet50', **RESNET_CASES['bottleneck'][1])).eval()
    optimized = se_zoo.optimize_for_inference(model, channels_last=False)
    assert optimized.pretrained_cfg == model.pretrained_cfg
    assert all(b.fused_se for b in optimized.modules() if isinstance(b, SEBottleneck))
    x = _inputs(2, 64, torch.contiguous_format)
    with torch.inference_mode():
        torch.testing.assert_close(optimized.forward_features(x), model.forward_features(x), atol=1e-4, rtol=0)


def test_optimize_for_inference_rejects_a_non_module():
    with pytest.raises(TypeError, match='nn.Module'):
        se_zoo.optimize_for_inference({'conv1.weight': torch.zeros(1)})


def test_optimized_model_compiles_and_exports(randomize_batchnorm, tmp_path):
    """The fused path under torch.compile(fullgraph=True) and the default ONNX exporter with a dynamic batch."""
    import onnxruntime as ort
    model = randomize_batchnorm(timm.create_model('se_resnet50', **RESNET_CASES['bottleneck'][1])).eval()
    optimized = se_zoo.optimize_for_inference(model)
    x = _inputs(3, 64, torch.channels_last)
    with torch.inference_mode():
        expected = model(x)
        compiled = torch.compile(optimized, backend='aot_eager', fullgraph=True)  # any graph break raises
        torch.testing.assert_close(compiled(x), expected, atol=1e-4, rtol=0)

    path = tmp_path / 'optimized.onnx'
    torch.onnx.export(optimized, (_inputs(2, 64, torch.contiguous_format),), str(path), dynamo=True,
                      input_names=['x'], output_names=['logits'],
                      dynamic_shapes={'x': {0: torch.export.Dim('batch')}}, verbose=False)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    logits, = session.run(['logits'], {'x': x.contiguous().numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize('name', ['se_resnet50', 'se_mobilenet_v3_small_100'])
def test_optimize_for_inference_is_timms_reparameterization_plus_bn_folding(name, randomize_batchnorm, photo_batch):
    """optimize_for_inference and timm.utils.reparameterize_model switch the same blocks, and both compute the
    reference function on real photos (within 1e-4 of the logits' scale)."""
    model = randomize_batchnorm(timm.create_model(name, layers=(1, 1, 1, 1)) if 'resnet' in name
                                else timm.create_model(name)).eval()
    reparameterized = reparameterize_model(model).eval()
    optimized = se_zoo.optimize_for_inference(model)
    fused = lambda m: sorted(n for n, b in m.named_modules() if getattr(b, 'fused_se', False))  # noqa: E731
    assert fused(reparameterized) == fused(optimized)
    assert not fused(model), 'the caller\'s model keeps the reference path'
    x = photo_batch(128, model)
    with torch.no_grad():
        expected = model(x)
        scale = max(1., expected.abs().max().item())
        for candidate in (reparameterized, optimized):
            assert (candidate(x.contiguous(memory_format=torch.channels_last)) - expected).abs().max() <= 1e-4 * scale
