"""se_zoo.inspection: the gate vectors of every SE block (se_zoo's and timm's), in execution order."""
import pytest
import timm
import torch

from se_zoo import SqueezeExcite, add_se, excitations


@pytest.fixture(scope='module')
def images(photos) -> torch.Tensor:
    """The skimage photos at 64 px through timm's ImageNet eval transform."""
    from timm.data import create_transform
    transform = create_transform(64, is_training=False)
    return torch.stack([transform(p) for p in photos])


def test_excitations_one_gate_vector_per_block(images):
    model = timm.create_model('se_resnet18', num_classes=10)
    model.train()
    gates = excitations(model, images)
    assert model.training  # mode restored
    names = [n for n, m in model.named_modules() if isinstance(m, SqueezeExcite)]
    assert list(gates) == names and len(names) == 8
    widths = [64, 64, 128, 128, 256, 256, 512, 512]
    for (name, gate), width in zip(gates.items(), widths):
        assert gate.shape == (len(images), width), name
        assert ((gate > 0) & (gate < 1)).all()
    # They are the gates this forward computed in that block: recompute one from the squeezed vector it saw.
    se = model.layer3[0].se
    captured = {}
    handle = se.fc1.register_forward_pre_hook(lambda m, args: captured.setdefault('squeezed', args[0].clone()))
    model.eval()
    with torch.no_grad():
        model(images)
        expected = se.gate(se.fc2(se.act(se.fc1(captured['squeezed'])))).flatten(1)
    handle.remove()
    torch.testing.assert_close(gates['layer3.0.se'], expected)


def test_excitations_of_a_fresh_retrofit_are_one_half(images):
    model = add_se(timm.create_model('resnet18', num_classes=10))
    gates = excitations(model, images)
    assert len(gates) == 8
    assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in gates.values())


def test_excitations_needs_se_blocks(images):
    with pytest.raises(ValueError, match='has no SE block'):
        excitations(timm.create_model('resnet18'), images)


@pytest.mark.parametrize('name', ['seresnet18', 'mobilenetv3_small_100', 'efficientnet_b0'])
def test_excitations_read_timms_own_se_layers(name, images):
    """timm's SEModule and MBConv SqueezeExcite apply their gate as a module too: their gates are read the same way."""
    model = timm.create_model(name)
    gates = excitations(model, images)
    se_names = [n for n, m in model.named_modules() if n.endswith('.se') and hasattr(m, 'gate')]
    assert gates and list(gates) == se_names
    for name_, gate in gates.items():
        assert gate.shape[0] == len(images) and ((gate >= 0) & (gate <= 1)).all(), name_
