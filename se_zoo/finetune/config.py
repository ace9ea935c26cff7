"""The recipe of a fine-tuning run, as plain data with its checks: no torch in this module."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..errors import InvalidArgumentError, check_positive_int

__all__ = ['FinetuneConfig', 'RESUME_MUST_MATCH']

# Config fields that define the optimisation trajectory: resuming with a different value would not continue
# the same run, so it is refused. (Others, e.g. workers or progress, may change between sessions.)
RESUME_MUST_MATCH = (
    'model', 'data', 'pretrained', 'init', 'model_kwargs', 'add_se', 'se_kwargs', 'img_size', 'epochs',
    'batch_size', 'opt', 'lr', 'weight_decay', 'momentum', 'sched', 'warmup_epochs', 'min_lr', 'scale',
    'hflip', 'color_jitter', 'auto_augment', 're_prob', 'mixup', 'cutmix', 'smoothing', 'train_samples',
    'eval_samples', 'seed',
)


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run (``se-zoo finetune --help`` documents the same options)."""
    model: str
    data: str = 'fashion-mnist'
    output: str = 'output'
    pretrained: bool = False
    init: Optional[str] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    add_se: bool = False
    se_kwargs: Dict[str, Any] = field(default_factory=dict)
    img_size: Optional[int] = None
    epochs: int = 10
    batch_size: int = 128
    opt: str = 'adamw'
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    sched: str = 'cosine'
    warmup_epochs: int = 0
    min_lr: float = 0.
    # Lighter than timm's ImageNet defaults (scale 0.08-1, jitter 0.4): fine-tuning sets are small and short.
    scale: Tuple[float, float] = (0.5, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.
    auto_augment: Optional[str] = None
    re_prob: float = 0.
    mixup: float = 0.
    cutmix: float = 0.
    smoothing: float = 0.1
    train_samples: Optional[int] = None
    eval_samples: Optional[int] = None
    workers: int = 2
    # Largest share of the images (training and evaluation) that may be unreadable: each one met is skipped and
    # named; past this share the run stops. check_images decodes them all before training, in worker processes.
    max_unreadable: float = 0.01
    check_images: bool = False
    seed: int = 0
    amp: Optional[bool] = None
    device: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        """Check every field before any work, so a bad value fails at once with a message that names it."""
        self.scale = tuple(self.scale)
        for name in ('epochs', 'batch_size'):
            check_positive_int(name, getattr(self, name))
        for name in ('warmup_epochs', 'workers', 'seed'):
            check_positive_int(name, getattr(self, name), zero=True)
        for name in ('img_size', 'train_samples', 'eval_samples'):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        _check_number('lr', self.lr, low=0., low_open=True)
        for name in ('weight_decay', 'min_lr', 'color_jitter', 'mixup', 'cutmix'):
            _check_number(name, getattr(self, name), low=0.)
        for name in ('hflip', 're_prob', 'max_unreadable'):
            _check_number(name, getattr(self, name), low=0., high=1.)
        _check_number('momentum', self.momentum, low=0., high=1., high_open=True)
        _check_number('smoothing', self.smoothing, low=0., high=1., high_open=True)
        if len(self.scale) != 2 or not all(isinstance(v, (int, float)) for v in self.scale) \
                or not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise InvalidArgumentError(
                f'scale={self.scale!r} must be MIN MAX with 0 < MIN <= MAX <= 1 (the crop\'s share of the image area)')
        if self.warmup_epochs >= self.epochs and self.warmup_epochs:
            raise InvalidArgumentError(f'warmup_epochs={self.warmup_epochs} must be fewer than epochs={self.epochs}')
        if self.resume and self.overwrite:
            raise InvalidArgumentError('give either resume=True (continue the checkpoint) or overwrite=True (replace it), not both')
        if self.pretrained and self.init:
            raise InvalidArgumentError('give either pretrained=True (published weights) or init=PATH (local weights), not both')
        if self.se_kwargs and not self.add_se:
            raise InvalidArgumentError(f'se_kwargs={self.se_kwargs!r} need add_se=True (--add-se): they configure the '
                                       'SE blocks that add_se inserts')
        for name in ('model_kwargs', 'se_kwargs'):
            if not isinstance(getattr(self, name), dict):
                raise InvalidArgumentError(f'{name}={getattr(self, name)!r} must be a dict of keyword arguments')


def _check_number(name: str, value: Any, low: float, high: Optional[float] = None,
                  low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        bounds = ('(' if low_open else '[') + f'{low:g}, ' + (f'{high:g}' if high is not None else 'inf') + \
            (')' if high_open or high is None else ']')
        raise InvalidArgumentError(f'{name}={value!r} must be a number in {bounds}')
