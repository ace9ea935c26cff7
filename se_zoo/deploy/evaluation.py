"""Top-1 accuracy of an export on labelled images, per precision, each on its runtime."""
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from ..errors import InvalidArgumentError
from .config import DeployConfig
from .datasets import evaluation_dataset
from .runtime import load
from .selection import Candidate, accuracy_on

__all__ = ['evaluate']


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
        num_threads: the runtimes' threads.
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
    preprocessing = config.preprocessing
    candidates = {p: Candidate(p, model.run) for p, model in models.items()}
    return accuracy_on(candidates, dataset, preprocessing.transform(), preprocessing.image_mode, progress)
