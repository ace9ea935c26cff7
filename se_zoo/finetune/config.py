"""The recipe of a fine-tuning run, as plain data: no torch here, so the command line can show it quickly."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..errors import InvalidArgumentError

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
    seed: int = 0
    amp: Optional[bool] = None
    device: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.scale = tuple(self.scale)
        for name in ('epochs', 'batch_size'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f'{name}={value!r} must be a positive integer')
        if not self.lr > 0:
            raise InvalidArgumentError(f'lr={self.lr!r} must be > 0')
        if self.resume and self.overwrite:
            raise InvalidArgumentError('give either resume=True (continue the checkpoint) or overwrite=True (replace it), not both')
        if self.pretrained and self.init:
            raise InvalidArgumentError('give either pretrained=True (published weights) or init=PATH (local weights), not both')
        if self.workers < 0:
            raise InvalidArgumentError(f'workers={self.workers!r} must be >= 0')


