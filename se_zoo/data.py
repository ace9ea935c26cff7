"""Datasets for fine-tuning: the built-in Fashion-MNIST and ImageFolder directories (through ``timm.data``); and
the real photos that conversions and exports are checked on.

Both kinds are map-style datasets that yield ``(PIL image, class_index)``; ``TransformedDataset`` applies a
``timm.data.create_transform`` pipeline on top. Problems a user can fix (a missing directory, an empty class folder, an
unreadable image, Fashion-MNIST not installed) raise an error that names the path and the fix, before any training.
"""
import gzip
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from timm.data import ImageDataset
from timm.data.readers.img_extensions import get_img_extensions
from timm.data.readers.reader_image_folder import find_images_and_targets

from .errors import InvalidArgumentError, MissingDependencyError, MissingFileError

__all__ = [
    'FASHION_MNIST', 'FASHION_MNIST_ROOT', 'FASHION_MNIST_CLASSES', 'PHOTO_NAMES', 'FashionMNIST', 'ImageFolder',
    'TransformedDataset', 'create_datasets', 'eval_split_name', 'photos', 'random_subset', 'read_idx',
]

FASHION_MNIST = 'fashion-mnist'
FASHION_MNIST_ROOT = Path('/usr/share/datasets/fashion-mnist')
FASHION_MNIST_CLASSES = (
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
_FASHION_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
# IDX magic numbers: 0x00000803 is a 3-d uint8 array (images), 0x00000801 a 1-d uint8 array (labels).
_IDX_UINT8_MAGIC = {3: 2051, 1: 2049}
# skimage.data's bundled photos (CC0 / public domain): a cat, a cup, a person and a rocket, different enough
# in content and colour to drive every channel of a network.
PHOTO_NAMES = ('chelsea', 'coffee', 'astronaut', 'rocket')
# Names of an ImageFolder root's evaluation split, in order of preference (timm's own search order).
EVAL_SPLIT_NAMES = ('val', 'validation', 'test')


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """Read a gzipped IDX file of uint8 values (the MNIST/Fashion-MNIST format) as a numpy array."""
    path = Path(path)
    with gzip.open(path, 'rb') as f:
        data = f.read()
    magic = int.from_bytes(data[:4], 'big')
    ndim = data[3]
    if _IDX_UINT8_MAGIC.get(ndim) != magic:
        raise InvalidArgumentError(f'{path} is not a uint8 IDX file (magic number {magic:#010x})')
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise InvalidArgumentError(f'{path} is truncated: header says {shape}, file holds {len(data) - offset} values')
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST (Xiao et al. 2017) from the Debian package ``dataset-fashion-mnist``.

    Args:
        split: ``'train'`` (60,000 images) or ``'test'`` (10,000).
        root: Directory holding the four ``*-ubyte.gz`` files (default: where the Debian package puts them).
        transform: Applied to each PIL image (e.g. one from ``timm.data.create_transform``).
        input_img_mode: PIL mode of the yielded images; ``'RGB'`` (default) lets any 3-channel model train on them.
        num_samples: Keep only the first ``num_samples`` images (the files are already in random class order).
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(
            self,
            split: str = 'train',
            root: Union[str, Path, None] = None,
            transform: Optional[Callable] = None,
            input_img_mode: str = 'RGB',
            num_samples: Optional[int] = None,
    ) -> None:
        if split not in _FASHION_MNIST_FILES:
            raise InvalidArgumentError(f'split={split!r} is not a Fashion-MNIST split; use one of {", ".join(_FASHION_MNIST_FILES)}')
        root = Path(root) if root is not None else FASHION_MNIST_ROOT
        paths = [root / name for name in _FASHION_MNIST_FILES[split]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise MissingFileError(
                f'Fashion-MNIST is not installed ({", ".join(missing)} not found); install it with '
                f'`apt-get install dataset-fashion-mnist` (Debian/Ubuntu)')
        images, labels = (read_idx(p) for p in paths)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise InvalidArgumentError(f'{root} does not hold a Fashion-MNIST {split} split: images {images.shape}, labels {labels.shape}')
        if num_samples is not None:
            images, labels = images[:num_samples], labels[:num_samples]
        self.images = images
        self.targets = labels.astype(np.int64)
        self.transform = transform
        self.input_img_mode = input_img_mode

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        img = Image.fromarray(self.images[index])  # uint8 HxW: mode 'L'
        if self.input_img_mode != 'L':
            img = img.convert(self.input_img_mode)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])


class ImageFolder(ImageDataset):
    """timm's ``ImageDataset`` over a ``root/<class>/<image>`` tree, checked up front.

    Every class folder must hold at least one image and every image must open; otherwise a ``ValueError`` names
    the folder or file. (timm's dataset skips unreadable files with a warning, which would silently train on less
    data.) A decoding error that only shows while loading is raised with the file name as well.
    """

    def __init__(self, root: Union[str, Path], class_to_idx: Optional[Dict[str, int]] = None, **kwargs: Any) -> None:
        root = Path(root)
        found_to_idx = _check_image_folder(root)
        if class_to_idx is None:
            class_to_idx = found_to_idx
        else:
            unknown = sorted(set(found_to_idx) - set(class_to_idx))
            if unknown:
                raise InvalidArgumentError(f'{root} has class folders the training split lacks: {", ".join(unknown)}')
        super().__init__(str(root), class_map=class_to_idx, **kwargs)
        self.classes = tuple(sorted(class_to_idx, key=class_to_idx.get))

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        try:
            return super().__getitem__(index)
        except OSError as e:
            raise InvalidArgumentError(f'cannot read image {self.filename(index, absolute=True)}: {e}') from e


def _check_image_folder(root: Path) -> Dict[str, int]:
    if not root.is_dir():
        raise MissingFileError(f'dataset directory {root} does not exist')
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith('.'))
    if not class_dirs:
        raise InvalidArgumentError(f'{root} has no class folders; expected {root}/<class name>/<image files>')
    extensions = get_img_extensions(as_set=True)
    for class_dir in class_dirs:
        images = [p for p in class_dir.rglob('*') if p.suffix.lower() in extensions and p.is_file()]
        if not images:
            raise InvalidArgumentError(
                f'class folder {class_dir} holds no images (looked for {", ".join(sorted(extensions))})')
        for path in images:
            _check_image(path)
    _, class_to_idx = find_images_and_targets(str(root), types=extensions)
    return class_to_idx


def _check_image(path: Path) -> None:
    try:
        with Image.open(path) as img:
            img.verify()  # the container: header, chunk checksums
        with Image.open(path) as img:
            img.load()  # the pixels: a truncated file passes verify() and fails only here
    except Exception as e:  # PIL raises several unrelated types for a bad file
        raise InvalidArgumentError(f'cannot read image {path}: {e}') from e


def _image_folder_splits(root: Path) -> Tuple[Path, Path]:
    if not root.is_dir():
        raise MissingFileError(f'dataset directory {root} does not exist')
    train = root / 'train'
    evals = [root / name for name in EVAL_SPLIT_NAMES if (root / name).is_dir()]
    if not train.is_dir() or not evals:
        raise MissingFileError(
            f'{root} must hold a train/ folder and one of {", ".join(n + "/" for n in EVAL_SPLIT_NAMES)}, '
            f'each laid out as <class name>/<image files>')
    return train, evals[0]


def eval_split_name(data: Union[str, Path]) -> str:
    """The split ``create_datasets`` evaluates on: ``'test'`` for Fashion-MNIST, else the folder's
    ``val``/``validation``/``test``; what a reported accuracy is an accuracy of."""
    if str(data) == FASHION_MNIST:
        return 'test'
    return _image_folder_splits(Path(data))[1].name


def create_datasets(
        data: Union[str, Path],
        train_samples: Optional[int] = None,
        eval_samples: Optional[int] = None,
) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, Sequence[str]]:
    """The (train, eval, class names) of ``data``: ``'fashion-mnist'`` or an ImageFolder root.

    An ImageFolder root holds ``train/`` and ``val/`` (or ``validation/``, ``test/``), each ``<class>/<images>``;
    the eval split uses the training split's class indices. ``*_samples`` keep a subset of each split (a prefix
    of Fashion-MNIST, whose files are already shuffled; a fixed random subset of a folder). The datasets yield
    PIL images: wrap them in ``TransformedDataset``.
    """
    if str(data) == FASHION_MNIST:
        train = FashionMNIST('train', num_samples=train_samples)
        evaluation = FashionMNIST('test', num_samples=eval_samples)
        return train, evaluation, FASHION_MNIST_CLASSES
    train_root, eval_root = _image_folder_splits(Path(data))
    train = ImageFolder(train_root)
    evaluation = ImageFolder(eval_root, class_to_idx=train.reader.class_to_idx)
    return random_subset(train, train_samples), random_subset(evaluation, eval_samples), train.classes


class TransformedDataset(torch.utils.data.Dataset):
    """``dataset`` with ``transform`` applied to each image; the base dataset is left as it is."""

    def __init__(self, dataset: torch.utils.data.Dataset, transform: Callable) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        img, target = self.dataset[index]
        return self.transform(img), target


def random_subset(dataset: torch.utils.data.Dataset, num_samples: Optional[int]) -> torch.utils.data.Dataset:
    """``num_samples`` items of ``dataset`` drawn at random (seed 0, in index order), or all of it (None)."""
    # Folders are read in class order, so a prefix would drop whole classes: take a fixed random subset instead.
    if num_samples is None or num_samples >= len(dataset):
        return dataset
    indices = np.sort(np.random.default_rng(0).permutation(len(dataset))[:num_samples])
    return torch.utils.data.Subset(dataset, indices.tolist())


def photos() -> List[Image.Image]:
    """The photos of ``PHOTO_NAMES`` from ``skimage.data``, as RGB PIL images."""
    try:
        from skimage import data as skimage_data  # optional: only the checks of conversions and exports need it
    except ImportError:
        raise MissingDependencyError(
            "conversions and exports are checked on skimage.data's photos, which need scikit-image: "
            "pip install 'se-zoo[convert]' or 'se-zoo[deploy]'") from None
    return [Image.fromarray(getattr(skimage_data, name)()) for name in PHOTO_NAMES]
