"""Shape and key checks on the meta device, for every registered architecture and every pretrained tag.

The meta device builds a network without allocating or initialising its weights and runs it on shapes alone, so
these checks cost the same at any width and input size: every architecture is checked at its default input size,
and every weight tag is checked to load strictly, without a download.

This module also picks the architectures that ``tests/test_models.py`` runs on real tensors (``REPRESENTATIVES``):
one per block structure. Two networks share a block structure when they contain the same module classes, each
with the same named children (for a container, the same set of child classes), so that a deeper or wider network
made of the same blocks adds nothing that those checks could find; a new block, stem, shortcut or activation, or
an existing block with another submodule in one of its slots (ResNet-D's pooled shortcut, ResNeXt-AA's
anti-aliasing pool), makes a structure of its own. Of each structure the network with the fewest parameters is
the representative.

Every build and forward here runs under ``shapes_only()`` (tests/meta_shapes.py), which answers weight
initialisers and eval-mode BatchNorm on meta tensors without their Python decompositions.
"""
import functools
import json
import math
import os
from typing import Any, Dict, FrozenSet, List, Tuple

import pytest
import timm
import torch
import torch.nn as nn
from timm.models import group_parameters

import se_zoo
from se_zoo.state_dicts import pretrained_filter
from se_zoo.weights.manifest import load_manifest

from meta_shapes import shapes_only

MODEL_NAMES = se_zoo.list_models()
BATCH_SIZE = 2
SIZE = 64
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@functools.lru_cache(maxsize=None)
def meta_model(name: str) -> nn.Module:
    """``name`` with default arguments on the meta device, in eval mode. Shared: callers must not modify it."""
    return timm.create_model(name, device='meta').eval()


@functools.lru_cache(maxsize=None)
def meta_features(name: str) -> torch.Tensor:
    """``forward_features`` of ``meta_model(name)`` at its default input size. A meta forward costs the same at any
    size, but not nothing (BatchNorm runs as a Python decomposition there), so the checks share this one."""
    size = meta_model(name).pretrained_cfg['input_size'][-1]
    return meta_model(name).forward_features(_meta_input(size=size))


def _class_name(module: nn.Module) -> str:
    return f'{type(module).__module__}.{type(module).__qualname__}'


def module_classes(model: nn.Module) -> FrozenSet[str]:
    return frozenset(_class_name(m) for m in model.modules())


def block_structure(model: nn.Module) -> FrozenSet[Tuple[str, Any]]:
    """Every module class with its named children (a container: its set of child classes), widths and depths left out."""
    structure = set()
    for m in model.modules():
        if isinstance(m, _CONTAINERS):
            children: Any = frozenset(_class_name(c) for c in m.children())
        else:
            children = tuple(sorted((n, _class_name(c)) for n, c in m.named_children()))
        structure.add((_class_name(m), children))
    return frozenset(structure)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _representatives(names: List[str]) -> Tuple[str, ...]:
    groups: Dict[Any, List[Tuple[int, str]]] = {}
    for name in names:
        try:
            model = meta_model(name)
        except Exception:  # noqa: BLE001 - a network that does not build is its own group, so its checks fail loudly
            groups[('unbuildable', name)] = [(0, name)]
            continue
        groups.setdefault(block_structure(model), []).append((num_params(model), name))
    return tuple(sorted(min(group)[1] for group in groups.values()))


with shapes_only():
    REPRESENTATIVES = _representatives(MODEL_NAMES)


@pytest.fixture(autouse=True)
def _shapes_only():
    with shapes_only():
        yield


def input_size(model: nn.Module) -> int:
    """The test input size: SIZE, or the network's minimum (valid-padded networks such as Inception need 75)."""
    return max(SIZE, model.pretrained_cfg.get('min_input_size', (3, 0, 0))[-1])


def expected_sizes(model: nn.Module, size: int, reduction: int) -> Tuple[int, ...]:
    """The spatial sizes a feature map at ``reduction`` may have: exactly ceil(size / r) for a padded network; a
    valid-padded one (it declares a minimum input size) loses a border at every unpadded conv."""
    if 'min_input_size' in model.pretrained_cfg:
        return tuple(range(1, math.ceil(size / reduction) + 1))
    return (math.ceil(size / reduction),)


def head_hidden_size(model: nn.Module) -> int:
    # MobileNetV3's head has a conv after pooling, so its pre-logits width differs from num_features.
    return getattr(model, 'head_hidden_size', model.num_features)


def reference_key(key: str, reference_keys: Any) -> str:
    """The key of the full network that a features_only network's ``key`` names: timm flattens a top-level
    Sequential into its stages (Inception-V4's ``features.0`` becomes ``features_0``)."""
    return key if key in reference_keys else key.replace('_', '.', 1)


def _meta_model(name: str, **kwargs: Any) -> nn.Module:
    return timm.create_model(name, device='meta', **kwargs).eval()


def _meta_input(in_chans: int = 3, size: int = SIZE) -> torch.Tensor:
    return torch.empty(BATCH_SIZE, in_chans, size, size, device='meta')


def one_worker_per_architecture(names: List[str]) -> List[Any]:
    """``names`` (architectures or tags) as parameters that run on the pytest-xdist worker of their architecture
    (--dist loadgroup): the networks ``meta_model`` and ``_meta_variant`` keep, and tests/test_models.py's module
    fixture, are then built once, not once per worker."""
    return [pytest.param(name, marks=pytest.mark.xdist_group(name.partition('.')[0])) for name in names]


@pytest.mark.parametrize('name', one_worker_per_architecture(['se_resnet18']))
def test_xdist_groups_reach_the_scheduler(name, request):
    """pytest-xdist's loadgroup scheduler reads a test's group from its node id: guards the pytest pin
    (pyproject.toml), since on pytest 9.2 the id loses it and the suite silently builds everything twice."""
    if not (os.environ.get('PYTEST_XDIST_WORKER') and request.config.getoption('loadgroup', False)):
        pytest.skip('only a pytest-xdist worker under --dist loadgroup has groups')
    assert request.node.nodeid.endswith(f'@{name}')


# --- the representative set ---------------------------------------------------------------------------------

def test_representatives_cover_every_block_structure():
    assert REPRESENTATIVES and set(REPRESENTATIVES) <= set(MODEL_NAMES)
    models = {name: meta_model(name) for name in MODEL_NAMES}
    chosen = {name: block_structure(models[name]) for name in REPRESENTATIVES}
    # Every module class of every se_zoo network, and every block structure, is run by some representative.
    assert set().union(*(module_classes(m) for m in models.values())) == \
        set().union(*(module_classes(models[n]) for n in REPRESENTATIVES))
    for name, model in models.items():
        structure = block_structure(model)
        same = [r for r, s in chosen.items() if s == structure]
        assert len(same) == 1, f'{name}: block structure run by {same or "no representative"}'
        assert num_params(models[same[0]]) <= num_params(model), f'{same[0]} is not the smallest like {name}'
    assert len(set(chosen.values())) == len(chosen), 'two representatives of one block structure'


def test_block_structure_ignores_depth_and_width_only():
    """Guards the rule above: a width or depth is the same structure, another block in a slot is not."""
    base = block_structure(_meta_model('resnet50'))
    assert block_structure(_meta_model('resnet101')) == base
    assert block_structure(_meta_model('resnet50', channels=(32, 64, 128, 256))) == base
    assert block_structure(_meta_model('resnet50', avg_down=True)) != base
    assert block_structure(_meta_model('resnet50', aa_layer=nn.AvgPool2d)) != base


# --- every architecture ------------------------------------------------------------------------------------

@pytest.fixture(params=one_worker_per_architecture(MODEL_NAMES))
def model_name(request) -> str:
    return request.param


def test_default_cfg(model_name):
    model = meta_model(model_name)
    cfg = model.pretrained_cfg
    state_dict = model.state_dict()

    # pool_size and num_features: forward_features at the default input size.
    features = meta_features(model_name)
    assert features.shape == (BATCH_SIZE, model.num_features, *cfg['pool_size'])

    # first_conv / classifier name real modules, and get_classifier returns that classifier.
    first_conv = model.get_submodule(cfg['first_conv'])
    assert isinstance(first_conv, nn.Conv2d) and first_conv.in_channels == cfg['input_size'][0]
    assert cfg['first_conv'] + '.weight' in state_dict
    classifier = model.get_submodule(cfg['classifier'])
    assert isinstance(classifier, nn.Linear) and classifier.out_features == cfg['num_classes']
    assert cfg['classifier'] + '.weight' in state_dict
    assert model.get_classifier() is classifier


@pytest.mark.parametrize('coarse', [False, True])
def test_group_matcher_covers_every_parameter(model_name, coarse):
    model = meta_model(model_name)
    groups = group_parameters(model, model.group_matcher(coarse=coarse))
    grouped = [name for names in groups.values() for name in names]
    assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())
    assert len(groups) >= 3
    first, last = groups[min(groups)], groups[max(groups)]
    assert model.pretrained_cfg['first_conv'] + '.weight' in first
    assert model.pretrained_cfg['classifier'] + '.weight' in last


def test_forward_intermediates_shapes(model_name):
    model = meta_model(model_name)
    size = model.pretrained_cfg['input_size'][-1]  # meta_features' size
    x = _meta_input(size=size)
    final, intermediates = model.forward_intermediates(x)
    assert len(intermediates) == len(model.feature_info) >= 3
    for info, t in zip(model.feature_info, intermediates):
        assert t.shape[:2] == (BATCH_SIZE, info['num_chs'])
        assert t.shape[-1] == t.shape[-2] and t.shape[-1] in expected_sizes(model, size, info['reduction'])
    assert final.shape == meta_features(model_name).shape


def test_headless_in_chans_cfg_overlay_and_reset_classifier(model_name):
    """The keywords timm passes at build time, in one build (in_chans, no classifier, no pooling, a cfg overlay),
    then the heads reset_classifier gives that network."""
    overlay = dict(input_size=(5, 96, 96), crop_pct=1.0, mean=(0.5,) * 5, std=(0.25,) * 5)
    model = _meta_model(model_name, num_classes=0, global_pool='', in_chans=5, pretrained_cfg_overlay=overlay)
    assert model.get_submodule(model.pretrained_cfg['first_conv']).in_channels == 5
    assert not list(model.get_classifier().parameters())
    # the body is the default network's from the first conv on (test_default_cfg), so its features feed this head;
    # a timm model's forward is forward_head(forward_features(x))
    features = meta_features(model_name)
    out = model.forward_head(features)
    assert out.ndim == 4 and out.shape[:2] == (BATCH_SIZE, head_hidden_size(model))

    cfg = model.pretrained_cfg
    assert tuple(cfg['input_size']) == overlay['input_size'] and cfg['crop_pct'] == overlay['crop_pct']
    assert tuple(cfg['mean']) == overlay['mean'] and tuple(cfg['std']) == overlay['std']
    assert cfg['paper_ids'] == 'arXiv:1709.01507'  # the rest of the cfg is kept
    data_config = timm.data.resolve_data_config({}, model=model)
    assert data_config['input_size'] == (5, 96, 96) and data_config['crop_pct'] == 1.0

    model.reset_classifier(0, 'avg')
    assert not list(model.get_classifier().parameters())
    assert model.forward_head(features).shape == (BATCH_SIZE, head_hidden_size(model))
    model.reset_classifier(7, 'avg')
    assert model.forward_head(features).shape == (BATCH_SIZE, 7)
    assert model.get_classifier().out_features == 7


def test_features_only_out_indices(model_name):
    out_indices = (1, 3)
    reference = meta_model(model_name)
    model = _meta_model(model_name, features_only=True, out_indices=out_indices)
    info = [reference.feature_info[i] for i in out_indices]
    assert model.feature_info.channels() == [f['num_chs'] for f in info]
    assert model.feature_info.reduction() == [f['reduction'] for f in info]
    size = input_size(reference)
    features = model(_meta_input(size=size))
    assert [f.shape[:2] for f in features] == [(BATCH_SIZE, f['num_chs']) for f in info]
    for f, i in zip(features, info):
        assert f.shape[-1] in expected_sizes(reference, size, i['reduction'])
    # features_only keeps exactly the reference's weights up to the last stage it returns.
    reference_shapes = {k: v.shape for k, v in reference.state_dict().items()}
    mismatched = [k for k, v in model.state_dict().items()
                  if reference_shapes.get(reference_key(k, reference_shapes)) != v.shape]
    assert not mismatched, f'features_only weights not in the full network: {mismatched[:5]}'



# --- every pretrained tag ----------------------------------------------------------------------------------

MANIFEST = load_manifest()
TAGS = se_zoo.list_models(pretrained=True)


def test_every_manifest_weight_is_a_published_tag():
    assert TAGS and set(TAGS) == set(MANIFEST)
    assert set(TAGS) == set(timm.list_pretrained([f'{arch}.*' for arch in MODEL_NAMES]))


@functools.lru_cache(maxsize=None)
def _meta_variant(arch: str, model_args: str, num_classes: int) -> nn.Module:
    if model_args == '{}' and num_classes == meta_model(arch).num_classes:
        return meta_model(arch)  # most tags build the default network, which the checks above built already
    return _meta_model(arch, num_classes=num_classes, **json.loads(model_args))


@pytest.mark.parametrize('tag', one_worker_per_architecture(TAGS))
def test_tag_loads_strictly_on_meta(tag):
    """The tag's cfg resolves, and its mapping turns the source network's state dict into exactly the keys and
    shapes of the se_zoo network its manifest keywords build: timm's strict load of the weights succeeds."""
    entry = MANIFEST[tag]
    arch, _, name = tag.partition('.')
    cfg = timm.models.get_pretrained_cfg(tag)
    assert cfg is not None and cfg.tag == name
    assert cfg.hf_hub_id or cfg.url, f'{tag} names no file'
    model = _meta_variant(arch, json.dumps(entry.model_args, sort_keys=True), cfg.num_classes)
    assert model.get_submodule(cfg.first_conv).in_channels == cfg.input_size[0]
    if cfg.num_classes:
        assert model.get_submodule(cfg.classifier).out_features == cfg.num_classes
    if not entry.source_arch:
        return  # se_zoo's own weights are se_zoo state dicts; the publish tests load them
    source = _meta_variant(entry.source_arch, '{}', timm.models.get_pretrained_cfg(entry.timm_source).num_classes)
    state_dict = source.state_dict()
    if entry.mapping != 'none':
        state_dict = pretrained_filter(entry.mapping)(state_dict, model)
    expected = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    assert {k: (v.shape, v.dtype) for k, v in state_dict.items()} == expected
    model.load_state_dict(state_dict, strict=True)  # copies nothing on meta: a shared network stays as built
