"""Top-1 accuracy of an export on labelled images, per precision, as ONNX Runtime runs it."""
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from ..errors import InvalidArgumentError
from .config import DeployConfig
from .datasets import evaluation_dataset
from .runtime import load

__all__ = ['evaluate']

_BATCH = 256


def evaluate(
        path: Union[str, Path],
        data: Union[str, Path] = 'fashion-mnist',
        *,
        precisions: Optional[Sequence[str]] = None,
        num_samples: Optional[int] = None,
        num_threads: Optional[int] = None,
        progress: bool = True,
) -> Dict[str, float]:
    """Top-1 accuracy (percent) of each precision of the export at ``path`` on ``data``.

    Every image goes through the export's own preprocessing (``deploy.json``) once and is run by each precision,
    so the precisions are compared on identical inputs.

    Args:
        path: an export folder.
        data: ``'fashion-mnist'`` (its 10,000 test images) or an ImageFolder directory whose class folders are
            named like the model's labels.
        precisions: which of the export's files to run (default: all it holds).
        num_samples: evaluate on this many images (default: all).
        num_threads: ONNX Runtime intra-op threads.
        progress: show a progress bar.

    Returns:
        ``{precision: accuracy in percent}``.
    """
    config = DeployConfig.read(path)
    precisions = list(precisions or config.files)
    unknown = [p for p in precisions if p not in config.files]
    if unknown:
        raise InvalidArgumentError(f'{path} has no {", ".join(unknown)} model (it holds {", ".join(config.files)})')
    models = {p: load(path, precision=p, num_threads=num_threads) for p in precisions}
    dataset = evaluation_dataset(data, config.label_names, num_samples)
    preprocess = next(iter(models.values())).preprocess

    from tqdm import tqdm
    correct = {p: 0 for p in precisions}
    seen = 0
    with tqdm(total=len(dataset), desc='evaluating', unit='img', disable=not progress) as bar:
        for start in range(0, len(dataset), _BATCH):
            items = [dataset[i] for i in range(start, min(start + _BATCH, len(dataset)))]
            batch = preprocess([image for image, _ in items])
            labels = np.array([label for _, label in items])
            for precision, model in models.items():
                correct[precision] += int((model(batch).argmax(axis=1) == labels).sum())
            seen += len(labels)
            bar.update(len(labels))
    return {p: 100.0 * correct[p] / seen for p in precisions}

