"""Datasets for fine-tuning: the built-in Fashion-MNIST and ImageFolder directories (through ``timm.data``); and
the real photos that conversions and exports are checked on.

Both kinds are map-style datasets that yield ``(PIL image, class_index)``; ``TransformedDataset`` applies a
``timm.data.create_transform`` pipeline on top. A folder is listed, never read, when its dataset is built; an
image that does not decode is named when it is read (or skipped and counted, for training: ``ImageFolder``), or
found up front by ``find_unreadable_images``. Problems a user can fix (a missing directory, an empty class folder,
Fashion-MNIST not installed) raise an error that names the path and the fix, before any training.
"""
import contextlib
import gzip
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from timm.data import ImageDataset, create_transform, resolve_data_config
from timm.data.readers.img_extensions import get_img_extensions
from timm.data.readers.reader_image_folder import ReaderImageFolder
from torch.utils.data import default_collate
from tqdm import tqdm

from .errors import InvalidArgumentError, MissingDependencyError, MissingFileError

__all__ = [
    'FASHION_MNIST', 'FASHION_MNIST_ROOT', 'FASHION_MNIST_CLASSES', 'PHOTO_NAMES', 'FashionMNIST', 'ImageFolder',
    'TransformedDataset', 'UnreadableImage', 'collate_readable', 'create_datasets', 'dataset_image_paths',
    'eval_split_name', 'find_unreadable_images', 'photo_batch', 'photos', 'random_subset', 'read_idx',
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


class UnreadableImage(NamedTuple):
    """Stands in for an image that failed to open or decode, in an ``ImageFolder(skip_unreadable=True)``."""
    path: str
    error: str


class ImageFolder(ImageDataset):
    """timm's ``ImageDataset`` over a ``root/<class>/<image>`` tree, built by listing the files only.

    Building it opens no image, so a folder of a million images is ready in the time it takes to list them
    (``find_unreadable_images`` checks them all up front, in parallel, for those who want it). Every class folder
    must hold at least one image file, and an eval split may not have classes the training split lacks; otherwise
    an ``InvalidArgumentError`` names the folder.

    An image that does not open or decode raises an ``InvalidArgumentError`` naming the file when it is read; with
    ``skip_unreadable=True`` it yields ``(UnreadableImage(path, error), target)`` instead, which
    ``TransformedDataset`` passes through and ``collate_readable`` takes out of the batch, so that the training
    loop can skip and count it. (timm's own dataset silently substitutes the next image.)

    Args:
        root: The folder of class folders.
        class_to_idx: The class indices to use (an eval split takes the training split's); default: the class
            folders in timm's order.
        skip_unreadable: Yield an ``UnreadableImage`` for a file that cannot be read, instead of raising.
        input_img_mode: PIL mode the images are converted to.
    """

    def __init__(
            self,
            root: Union[str, Path],
            class_to_idx: Optional[Dict[str, int]] = None,
            skip_unreadable: bool = False,
            input_img_mode: str = 'RGB',
    ) -> None:
        root = Path(root)
        reader = _list_image_folder(root, class_to_idx)
        super().__init__(str(root), reader=reader, input_img_mode=input_img_mode)
        self.skip_unreadable = skip_unreadable
        self.classes = tuple(sorted(reader.class_to_idx, key=reader.class_to_idx.get))

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        path, target = self.reader.samples[index]
        try:
            img = _decode(path, self.input_img_mode)
        except Exception as e:  # PIL raises many unrelated types for a bad file (OSError, SyntaxError, ...)
            if not self.skip_unreadable:
                raise InvalidArgumentError(f'cannot read image {path}: {_one_line(e)}') from e
            return UnreadableImage(path, _one_line(e)), target
        if self.transform is not None:
            img = self.transform(img)
        return img, target

    def paths(self) -> List[str]:
        """The image files, in index order."""
        return [path for path, _ in self.reader.samples]


def _decode(path: str, mode: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert(mode)  # decodes the pixels: a truncated file fails here, not at open


def _one_line(error: BaseException) -> str:
    return ' '.join(str(error).split()) or type(error).__name__


def _list_image_folder(root: Path, class_to_idx: Optional[Dict[str, int]]) -> ReaderImageFolder:
    """timm's folder reader over ``root`` (one walk of the tree, no image opened), with its targets renumbered to
    ``class_to_idx`` and the folder's layout checked."""
    if not root.is_dir():
        raise MissingFileError(f'dataset directory {root} does not exist')
    extensions = get_img_extensions(as_set=True)
    class_dirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith('.'))
    if not class_dirs:
        raise InvalidArgumentError(f'{root} has no class folders; expected {root}/<class name>/<image files>')
    try:
        reader = ReaderImageFolder(str(root))
    except RuntimeError:  # timm's "Found 0 images"
        reader = None
    # which class folders hold an image file (timm labels a file by its innermost folder, which may be nested)
    prefix = len(str(root)) + 1
    filled = {path[prefix:].partition(os.sep)[0] for path, _ in reader.samples} if reader else set()
    for name in class_dirs:
        if name not in filled:
            raise InvalidArgumentError(
                f'class folder {root / name} holds no images (looked for {", ".join(sorted(extensions))})')
    if class_to_idx is not None:
        unknown = sorted(set(reader.class_to_idx) - set(class_to_idx))
        if unknown:
            raise InvalidArgumentError(f'{root} has class folders the training split lacks: {", ".join(unknown)}')
        names = {i: name for name, i in reader.class_to_idx.items()}
        reader.samples = [(path, class_to_idx[names[i]]) for path, i in reader.samples]
        reader.class_to_idx = dict(class_to_idx)
    return reader


def find_unreadable_images(
        paths: Sequence[str],
        workers: int = 0,
        progress: bool = False,
) -> Dict[str, str]:
    """The images among ``paths`` that do not open or decode, each with its error, read in ``workers`` processes
    (0: in this one), with a progress bar if ``progress``. Every image is decoded in full, as training will."""
    bar = tqdm(total=len(paths), desc='checking images', unit='img', disable=not progress, dynamic_ncols=True)
    errors: Dict[str, str] = {}
    chunk = 256
    with bar, (ProcessPoolExecutor(workers) if workers > 0 else contextlib.nullcontext()) as pool:
        chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
        for found, n in (pool.map(_read_errors, chunks) if pool else map(_read_errors, chunks)):
            errors.update(found)
            bar.update(n)
    return errors


def _read_errors(paths: Sequence[str]) -> Tuple[Dict[str, str], int]:
    errors = {}
    for path in paths:
        try:
            _decode(path, 'RGB')
        except Exception as e:  # as in ImageFolder.__getitem__
            errors[path] = _one_line(e)
    return errors, len(paths)


def dataset_image_paths(dataset: torch.utils.data.Dataset) -> List[str]:
    """The image files of an ``ImageFolder`` (or a ``Subset`` of one) in index order; [] for other datasets."""
    if isinstance(dataset, torch.utils.data.Subset):
        paths = dataset_image_paths(dataset.dataset)
        return [paths[i] for i in dataset.indices] if paths else []
    return dataset.paths() if isinstance(dataset, ImageFolder) else []


def collate_readable(batch: Sequence[Tuple[Any, int]]) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor],
                                                                 List[UnreadableImage]]:
    """A ``DataLoader`` ``collate_fn``: ``(images, targets, unreadable)``, the batch without the samples that are
    ``UnreadableImage``s, and those (images and targets are None when none is readable)."""
    readable = [sample for sample in batch if not isinstance(sample[0], UnreadableImage)]
    unreadable = [sample[0] for sample in batch if isinstance(sample[0], UnreadableImage)]
    images, targets = default_collate(readable) if readable else (None, None)
    return images, targets, unreadable


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
        skip_unreadable: bool = False,
) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, Sequence[str]]:
    """The (train, eval, class names) of ``data``: ``'fashion-mnist'`` or an ImageFolder root.

    An ImageFolder root holds ``train/`` and ``val/`` (or ``validation/``, ``test/``), each ``<class>/<images>``;
    the eval split uses the training split's class indices. ``*_samples`` keep a subset of each split (a prefix
    of Fashion-MNIST, whose files are already shuffled; a fixed random subset of a folder). The datasets yield
    PIL images: wrap them in ``TransformedDataset``. A folder is listed, not read: see ``ImageFolder`` for
    ``skip_unreadable``.
    """
    if str(data) == FASHION_MNIST:
        train = FashionMNIST('train', num_samples=train_samples)
        evaluation = FashionMNIST('test', num_samples=eval_samples)
        return train, evaluation, FASHION_MNIST_CLASSES
    train_root, eval_root = _image_folder_splits(Path(data))
    train = ImageFolder(train_root, skip_unreadable=skip_unreadable)
    evaluation = ImageFolder(eval_root, class_to_idx=train.reader.class_to_idx, skip_unreadable=skip_unreadable)
    return random_subset(train, train_samples), random_subset(evaluation, eval_samples), train.classes


class TransformedDataset(torch.utils.data.Dataset):
    """``dataset`` with ``transform`` applied to each image (an ``UnreadableImage`` passes through); the base
    dataset is left as it is."""

    def __init__(self, dataset: torch.utils.data.Dataset, transform: Callable) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        img, target = self.dataset[index]
        return (img if isinstance(img, UnreadableImage) else self.transform(img)), target


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


def photo_batch(
        model_or_pretrained_cfg: Union[nn.Module, Mapping[str, Any], None] = None,
        size: Optional[int] = None,
) -> torch.Tensor:
    """The photos of ``PHOTO_NAMES`` through a model's eval transform, as one ``(4, C, H, W)`` float batch.

    Args:
        model_or_pretrained_cfg: A model (its ``pretrained_cfg``, as ``timm.data.resolve_data_config`` reads it),
            a pretrained cfg dict, or None for timm's defaults (ImageNet mean/std, bicubic, crop_pct 0.875, 224).
        size: Square input size in place of the cfg's; the cfg's crop_pct, interpolation and normalisation stay.

    A 1-channel input size gets the photos in greyscale, as a 1-channel model would be fed.
    """
    if isinstance(model_or_pretrained_cfg, nn.Module):
        config = resolve_data_config({}, model=model_or_pretrained_cfg)
    else:
        # timm asserts on an empty cfg; its own defaults are what an empty one would mean
        config = resolve_data_config({}, pretrained_cfg=dict(model_or_pretrained_cfg or {'input_size': (3, 224, 224)}))
    in_chans = config['input_size'][0]
    if size is not None:
        config['input_size'] = (in_chans, int(size), int(size))
    mode = 'L' if in_chans == 1 else 'RGB'
    transform = create_transform(**config, is_training=False)
    return torch.stack([transform(photo.convert(mode)) for photo in photos()])
