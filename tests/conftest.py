"""Shared fixtures. The Hub environment must be set before anything imports huggingface_hub (timm does)."""
import atexit
import os
import shutil
import tempfile

# huggingface_hub reads these when first imported; every test process gets an empty cache of its own, removed
# when the process ends.
os.environ['HF_HOME'] = tempfile.mkdtemp(prefix='se_zoo_hf_home_')
atexit.register(shutil.rmtree, os.environ['HF_HOME'], ignore_errors=True)
os.environ.setdefault('NO_PROXY', '127.0.0.1,localhost')
os.environ['HF_HUB_DISABLE_XET'] = '1'  # a test server cannot speak xet; real users keep it
os.environ['HF_HUB_DISABLE_TELEMETRY'] = '1'
os.environ.pop('HF_HUB_OFFLINE', None)
os.environ.pop('HF_TOKEN', None)
os.environ.pop('SE_ZOO_WEIGHTS_MANIFEST', None)  # tests that publish point se_zoo at a manifest of their own

# The test Hub (tests/hub_server.py) listens on a port reserved now, so HF_ENDPOINT can name it before import.
from hub_server import HubServer, reserve_socket  # noqa: E402

_HUB_SOCKET = reserve_socket()
os.environ['HF_ENDPOINT'] = 'http://{}:{}'.format(*_HUB_SOCKET.getsockname()[:2])

from pathlib import Path  # noqa: E402
from typing import Callable, List  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import measure  # noqa: E402  (benchmarks/measure.py, on pytest's pythonpath)
import se_zoo.data  # noqa: E402


@pytest.fixture(scope='session')
def photos() -> List[Image.Image]:
    """Four natural photos from skimage.data (a cat, a cup, a person, a rocket): ``se_zoo.data.photos()``."""
    return se_zoo.data.photos()


@pytest.fixture(scope='session')
def photo_batch() -> Callable[..., torch.Tensor]:
    """``photo_batch(size=224, model=None)``: the photos through the model's eval transform (timm's defaults
    without a model) at ``size``, as one batch: ``se_zoo.data.photo_batch``."""
    def make(size: int = 224, model: torch.nn.Module = None) -> torch.Tensor:
        return se_zoo.data.photo_batch(model, size)

    return make


@pytest.fixture(scope='session')
def image_folder(photos) -> Callable[..., Path]:
    """``image_folder(root, suffix='.png')``: an ImageFolder root of the photos, ``train/`` and ``val/`` with the
    classes ``cat`` and ``cup``, three resized copies of each photo per class and split."""
    def write(root: Path, classes=('cat', 'cup'), suffix: str = '.png') -> Path:
        for split in ('train', 'val'):
            for c, name in enumerate(classes):
                folder = root / split / name
                folder.mkdir(parents=True)
                for i in range(3):
                    photos[c].resize((40 + 4 * i, 40)).save(folder / f'{i}{suffix}')
        return root

    return write


@pytest.fixture(scope='session')
def randomize_batchnorm() -> Callable[..., torch.nn.Module]:
    """``randomize_batchnorm(model, seed=0)``: non-trivial BN affine parameters and running statistics, in place.

    A freshly built network has every BN at identity statistics, and timm zero-initialises the last BN of
    each residual branch, which would hide the SE path from any comparison of outputs. The benchmarks' helper
    (``benchmarks/measure.py``, on pytest's ``pythonpath``), so that tests and benchmarks run the same networks.
    """
    return measure.randomize_batchnorm


@pytest.fixture
def assert_same_logits(record_property) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """``assert_same_logits(logits, expected)``: two networks compute the same function, to within 1e-5 of the
    logit scale max(1, max |expected|). The difference over that scale is kept for ``pytest --junitxml`` as the
    property ``max_logit_difference_over_scale``: the equivalence figure of each kind of weight source."""
    def check(logits: torch.Tensor, expected: torch.Tensor) -> None:
        scale = max(1., expected.abs().max().item())
        difference = (logits - expected).abs().max().item()
        record_property('max_logit_difference_over_scale', f'{difference / scale:.3g}')
        assert difference <= 1e-5 * scale, f'logits differ by {difference:.3g} at scale {scale:.3g}'

    return check


@pytest.fixture(scope='session')
def hub_server() -> 'HubServer':
    """The in-process Hub that HF_ENDPOINT points at (started on first use, for the whole session)."""
    server = HubServer(_HUB_SOCKET).start()
    yield server
    server.stop()


def pytest_configure(config) -> None:
    # Under pytest-xdist each worker would start one intra-op thread per core: `-n 2` on 2 cores then runs 4
    # busy threads, which spin against each other. One thread per worker keeps `-n N` at N busy cores.
    if os.environ.get('PYTEST_XDIST_WORKER'):
        torch.set_num_threads(1)
