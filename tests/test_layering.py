"""The import graph of se_zoo and its command line se_zoo_cli, read from the source (AST), points one way and keeps
timm's private API in one place.

Every import counts, at module level or inside a function: a function-level import that hides a cycle is still
a cycle. The layers, lowest first (a module may import its own layer's package, or any lower layer):

0. the base: ``errors``, ``files``, ``version``;
1. the SE layer ``squeeze_excite`` and the state-dict mappings ``state_dicts``;
2. ``weights.manifest`` (data); 3. ``weights.fetch`` (verified download); 4. ``weights.pin``;
5. ``models`` (the families) and ``data`` (datasets);
6. what works on a model: ``optimize``, ``retrofit``, ``profile``, ``inspection``, ``hub`` (publishing);
7. the applications: ``convert``, ``finetune``, ``deploy``;
8. the package root, which registers everything;
9. the command line, ``se_zoo_cli``: a package of its own, which nothing imports (it starts without torch).
"""
import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
import timm

import se_zoo  # noqa: F401  (registers the se_* models)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ('se_zoo', 'se_zoo_cli')
COMPAT_MODULE = 'se_zoo.models._timm_compat'

LAYERS = {
    'se_zoo.errors': 0, 'se_zoo.files': 0, 'se_zoo.version': 0,
    'se_zoo.squeeze_excite': 1, 'se_zoo.state_dicts': 1,
    'se_zoo.weights': 2,  # the package's __init__ is a docstring
    'se_zoo.weights.manifest': 2, 'se_zoo.weights.fetch': 3, 'se_zoo.weights.pin': 4,
    'se_zoo.models': 5, 'se_zoo.data': 5,
    'se_zoo.optimize': 6, 'se_zoo.retrofit': 6, 'se_zoo.profile': 6, 'se_zoo.inspection': 6, 'se_zoo.hub': 6,
    'se_zoo.convert': 7, 'se_zoo.finetune': 7, 'se_zoo.deploy': 7,
    'se_zoo': 8,
    'se_zoo_cli': 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def is_package(name: str, modules: Set[str]) -> bool:
    return any(m.startswith(name + '.') for m in modules)


def layer_of(name: str) -> Tuple[str, int]:
    """The layer entry that owns ``name``: the longest key of LAYERS that is ``name`` or a parent of it."""
    owner = max((k for k in LAYERS if name == k or name.startswith(k + '.')), key=len)
    return owner, LAYERS[owner]


def imports(path: Path, name: str, modules: Set[str]) -> Iterator[Tuple[str, int, str]]:
    """(imported se_zoo module, line, 'module' or 'function') for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if is_package(name, modules) or path.name == '__init__.py' else name.rpartition('.')[0]
    function_lines = {n.lineno for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                      for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        where = 'function' if getattr(node, 'lineno', None) in function_lines else 'module'
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] in PACKAGES:
                    yield alias.name, node.lineno, where
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - (node.level - 1)]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target.split('.')[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f'{target}.{alias.name}'
                yield (sub if sub in modules else target), node.lineno, where


def timm_private_imports(path: Path) -> Iterator[Tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'timm':
            private = [a.name for a in node.names if a.name.startswith('_')]
            if any(p.startswith('_') for p in node.module.split('.')) or private:
                yield node.lineno, f'from {node.module} import {", ".join(a.name for a in node.names)}'
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split('.')
                if parts[0] == 'timm' and any(p.startswith('_') for p in parts):
                    yield node.lineno, f'import {alias.name}'


@pytest.fixture(scope='module')
def graph() -> Dict[str, List[Tuple[str, int, str]]]:
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob('*.py')}
    modules = set(files)
    return {name: [edge for edge in imports(path, name, modules) if edge[0] != name]
            for name, path in files.items()}


def find_cycle(graph: Dict[str, List[Tuple[str, int, str]]]) -> List[str]:
    """One import cycle as a list of modules (first == last), or [] if there is none."""
    state: Dict[str, int] = {}  # 1: on the DFS stack, 2: done
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for target, _, _ in graph.get(node, ()):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_import_graph_covers_the_package(graph):
    # The walk must see the package as it is, or the tests below would pass on nothing.
    assert {'se_zoo.models.se_resnet', 'se_zoo.weights.fetch', 'se_zoo_cli', 'se_zoo_cli.finetune',
            'se_zoo.finetune.trainer'} <= set(graph)
    assert ('se_zoo.weights.fetch', 'module') in {(t, w) for t, _, w in graph['se_zoo.models._pretrained']}
    assert ('se_zoo.models', 'module') in {(t, w) for t, _, w in graph['se_zoo_cli.models']}
    assert any(w == 'function' for edges in graph.values() for _, _, w in edges), \
        'the CLI imports lazily; a walk that sees no function-level import is not reading function bodies'


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert not cycle, 'import cycle (function-level imports included): ' + ' -> '.join(cycle)


def test_find_cycle_finds_one_hidden_in_a_function():
    # The detector itself, on a graph with a cycle closed by a function-level import.
    graph = {'a': [('b', 1, 'module')], 'b': [('a', 7, 'function')], 'c': []}
    assert find_cycle(graph) == ['a', 'b', 'a']


def test_dependencies_point_down_the_layers(graph):
    upward = []
    for name, edges in graph.items():
        owner, rank = layer_of(name)
        for target, line, where in edges:
            target_owner, target_rank = layer_of(target)
            same_package = target_owner == owner
            if target_rank > rank or (target_rank == rank and not same_package):
                upward.append(f'{name}:{line} imports {target} ({where} level; layer {rank} -> {target_rank})')
    assert not upward, 'imports against the layering:\n' + '\n'.join(upward)


def test_nothing_imports_the_cli(graph):
    importers = [f'{name}:{line}' for name, edges in graph.items() if name.split('.')[0] != 'se_zoo_cli'
                 for target, line, _ in edges if target.split('.')[0] == 'se_zoo_cli']
    assert not importers


def test_private_timm_apis_only_in_the_compat_module():
    found = {module_name(p): list(timm_private_imports(p)) for package in PACKAGES for p in (ROOT / package).rglob('*.py')}
    assert found[COMPAT_MODULE], 'the compat module is where the private imports are; the check must see them'
    outside = [f'{name}:{line}: {text}' for name, items in found.items() if name != COMPAT_MODULE
               for line, text in items]
    assert not outside, 'private timm API outside se_zoo/models/_timm_compat.py:\n' + '\n'.join(outside)


def test_the_installed_timm_is_in_the_declared_range_and_has_what_the_floor_is_for():
    """The suite runs on the timm pip installs from pyproject's range. Its floor, 1.0.31, is also the newest 1.0.x
    release at the time of writing, so both ends are the version tested; a newer release moves the upper end.

    The floor is the first timm whose create_model records the model's keywords (``model._model_args``), which
    se_zoo's config.json is written from; an older timm would publish ablations without their keywords.
    """
    pyproject = (ROOT / 'pyproject.toml').read_text()
    floor, cap = re.search(r'"timm>=([\d.]+),<([\d.]+)"', pyproject).groups()
    version = lambda text: tuple(int(part) for part in text.split('.')[:3])  # noqa: E731
    assert version(floor) <= version(timm.__version__) < version(cap), (timm.__version__, floor, cap)
    model = timm.create_model('se_resnet18', r=4)
    assert model._model_args['r'] == 4


def test_no_function_shadows_its_module():
    """A package attribute that is a function must not share its name with a submodule of that package: after
    ``import se_zoo.x.y`` the attribute ``y`` of ``se_zoo.x`` is whichever was bound last, a trap for any reader."""
    import importlib
    import pkgutil
    packages = [importlib.import_module(m.name) for m in pkgutil.walk_packages(se_zoo.__path__, 'se_zoo.')
                if m.ispkg] + [se_zoo]
    assert len(packages) >= 6, 'the walk must see se_zoo\'s subpackages'
    shadowing = []
    for package in packages:
        submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
        for name in submodules:
            value = vars(package).get(name)
            if value is not None and not isinstance(value, type(package)):
                shadowing.append(f'{package.__name__}.{name}')
    assert not shadowing, 'names bound to both a submodule and something else: ' + ', '.join(shadowing)
