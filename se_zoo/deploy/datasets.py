"""The images that deployment reads: calibration sets, the unlabelled images ``precision='auto'`` checks a
precision on, labelled evaluation sets and the photos exports are checked on.

This is the one module of ``se_zoo.deploy`` that imports ``se_zoo.data``: calibration and evaluation accept what
fine-tuning accepts (``'fashion-mnist'`` or an ImageFolder directory), with the same checks up front.
"""
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from .. import data
from ..data import FASHION_MNIST, FASHION_MNIST_CLASSES, PHOTO_NAMES, photo_batch, photos
from ..errors import InvalidArgumentError, MissingFileError, check_positive_int

__all__ = [
    'FASHION_MNIST', 'FASHION_MNIST_CLASSES', 'PHOTO_NAMES', 'calibration_dataset', 'check_dataset',
    'evaluation_dataset', 'photo_batch', 'photos']


def calibration_dataset(source: Union[str, Path], num_samples: int) -> torch.utils.data.Dataset:
    """``num_samples`` unlabelled-in-use images of ``source`` for int8 calibration.

    ``source`` is ``'fashion-mnist'`` (the training split, never the test images accuracy is reported on) or an
    ImageFolder directory, ``<class>/<images>``. A folder is sampled at random across classes (it is read in class
    order, so a prefix would calibrate on one class only); Fashion-MNIST's files are already shuffled.
    """
    check_positive_int('calibration_samples', num_samples)
    if str(source) == FASHION_MNIST:
        return data.FashionMNIST('train', num_samples=num_samples)
    return data.random_subset(_image_folder(source), num_samples)


def check_dataset(source: Union[str, Path], calibration_samples: int, num_samples: int) -> torch.utils.data.Dataset:
    """Up to ``num_samples`` images of ``source`` that ``calibration_dataset(source, calibration_samples)`` does
    not hold: the unlabelled images a precision is checked on, kept apart from the ones int8 was calibrated on
    (int8 would look better on the images its ranges were measured on). Fewer where ``source`` has fewer."""
    if str(source) == FASHION_MNIST:
        train = data.FashionMNIST('train', num_samples=calibration_samples + num_samples)
        indices = range(min(calibration_samples, len(train)), len(train))
        return torch.utils.data.Subset(train, list(indices))
    folder = _image_folder(source)
    # random_subset draws a prefix of one fixed permutation, so the larger draw holds the calibration set.
    calibrated = data.random_subset(folder, calibration_samples)
    larger = data.random_subset(folder, calibration_samples + num_samples)
    taken = set(_indices(calibrated))
    return torch.utils.data.Subset(folder, [i for i in _indices(larger) if i not in taken])


def _indices(dataset: torch.utils.data.Dataset) -> list:
    return list(dataset.indices) if isinstance(dataset, torch.utils.data.Subset) else list(range(len(dataset)))


def evaluation_dataset(
        source: Union[str, Path],
        label_names: Optional[Sequence[str]],
        num_samples: Optional[int] = None,
) -> torch.utils.data.Dataset:
    """Labelled images whose class indices are the model's: ``'fashion-mnist'`` (the 10,000 test images) or an
    ImageFolder directory whose class folders are named like the model's labels."""
    if num_samples is not None:
        check_positive_int('eval_samples', num_samples)
    if str(source) == FASHION_MNIST:
        if label_names is not None and tuple(label_names) != FASHION_MNIST_CLASSES:
            raise InvalidArgumentError(
                f'the model predicts {len(label_names)} classes ({", ".join(label_names[:4])}, ...), not '
                f"Fashion-MNIST's; evaluate it on an ImageFolder directory of its own classes")
        return data.FashionMNIST('test', num_samples=num_samples)
    if label_names is None:
        raise InvalidArgumentError(
            'the export has no label names, so the class folders of an evaluation directory cannot be matched '
            "to the model's outputs; export a model whose pretrained_cfg has label_names")
    return data.random_subset(_image_folder(source, class_to_idx={name: i for i, name in enumerate(label_names)}),
                              num_samples)


def _image_folder(root: Union[str, Path], **kwargs) -> torch.utils.data.Dataset:
    root = Path(root)
    if not root.exists():  # se_zoo.data's own message would not say that 'fashion-mnist' is an option here
        raise MissingFileError(
            f"image directory {root} does not exist; give an ImageFolder directory (<class>/<images>) or "
            f"'{FASHION_MNIST}'")
    return data.ImageFolder(root, **kwargs)
