"""Fine-tune any se_zoo or timm model on an ImageFolder directory or Fashion-MNIST, on timm's training components.

``se_zoo.finetune.finetune('se_resnet18', 'fashion-mnist', epochs=3)`` (or ``se-zoo finetune``) trains with ``timm.data``
transforms (and ``timm.data.Mixup`` if asked), ``timm.optim.create_optimizer_v2``, ``timm.scheduler``
and ``timm.loss``, evaluates after every epoch and writes, under ``output``:

- ``best/``: the best-evaluating weights as a publish-ready folder (``se_zoo.hub.publish.save_folder``: model.safetensors,
  timm's config.json, a model card with the measured accuracy), ready for ``se_zoo.hub.publish.push_folder``;
- ``last/``: the same for the latest epoch, plus ``training_state.safetensors`` / ``training_state.json``
  (optimizer and scheduler state, epoch, history; no pickle) from which ``resume=True`` continues.

Each checkpoint folder is built next to its final place and swapped in by renames, so an interruption leaves
the previous checkpoint, never a partial one. All randomness of an epoch (shuffling, augmentation, mixup, dropout)
is seeded from ``(seed, epoch, rank)``, so a resumed run repeats the uninterrupted one exactly.

An ImageFolder is listed, not read, before training, so a run starts in seconds on a million images. An
unreadable image is skipped where training meets it, named in the log, counted in the epoch line and listed in
``training_state.json`` and ``FinetuneResult.unreadable``; once more than ``max_unreadable`` (1 %) of the images
are, the run stops with an ``UnreadableImagesError`` that names some. ``check_images=True`` decodes them all up
front, in ``workers`` processes.

Launched by ``torchrun --nproc-per-node N``, the same call trains data-parallel (DDP; nccl on GPUs, gloo on CPU):
``batch_size`` is per process, the global batch is ``batch_size * world_size``.

The package: ``config`` (the recipe, plain data), ``trainer`` (the loop), ``checkpoint`` (the file format).
"""
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
import torch.distributed as dist
from timm.data import create_transform
from timm.optim import list_optimizers
from timm.utils.distributed import init_distributed_device_so

from ..errors import InvalidArgumentError, MissingFileError, did_you_mean
from ..models import check_model_name
from .checkpoint import TRAINING_STATE_NAME, check_resumable, config_json, find_last, read_training_state
from .config import FinetuneConfig
from .trainer import EpochStats, FinetuneResult, Trainer, TrainingDivergedError, UnreadableImagesError

# The schedules of timm.scheduler.create_scheduler_v2 that the trainer can use (timm keeps no list of them). Left
# out: 'none' (the trainer steps a scheduler) and 'plateau', which steps once per epoch on a validation metric
# where the trainer steps the schedule every update.
SCHEDULERS = ('cosine', 'tanh', 'step', 'multistep', 'poly', 'wsd', 'rsqrt', 'constant')

__all__ = [
    'FinetuneConfig', 'EpochStats', 'FinetuneResult', 'Trainer', 'TrainingDivergedError', 'UnreadableImagesError',
    'finetune', 'TRAINING_STATE_NAME',
]


def finetune(
        model: Optional[str] = None,
        data: Optional[Union[str, Path]] = None,
        *,
        on_epoch_end: Optional[Callable[[EpochStats], None]] = None,
        **options: Any,
) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` and write checkpoints under ``output``.

    Args:
        model: a model name (``se_zoo.list_models()`` or ``timm.list_models()``), a pretrained tag
            (``se_resnet50.ra2_in1k``), ``hf-hub:ORG/NAME`` or a folder; optional with ``resume=True``.
        data: ``'fashion-mnist'`` (the default; Debian package ``dataset-fashion-mnist``) or an ImageFolder root
            holding ``train/`` and ``val/`` (or ``validation/``, ``test/``), each ``<class>/<images>``.
        on_epoch_end: called with each epoch's ``EpochStats`` after its checkpoint is written (on every process).
        **options: any ``FinetuneConfig`` field, e.g. ``output``, ``epochs``, ``batch_size`` (per process),
            ``lr``, ``opt``, ``sched``, ``img_size``, ``pretrained``, ``init`` (a local safetensors file or
            publish-ready folder, whose config.json keywords are used), ``model_kwargs``, ``add_se`` and
            ``se_kwargs`` (retrofit SE first, see ``se_zoo.add_se``), ``mixup``/``cutmix``/``smoothing``, ``seed``,
            ``resume``.

    With ``resume=True`` only ``output`` is needed: the run continues with the recipe stored in its checkpoint.
    Options given as well must agree with that recipe, except ``epochs``, which may grow to extend a finished run
    (its learning-rate schedule is then planned anew over the new total, from the current step).

    Returns:
        A ``FinetuneResult``; the best weights are a publish-ready folder at ``result.best_dir``.
    """
    if model is not None:
        options['model'] = model
    if data is not None:
        options['data'] = str(data)
    config = _resumed_config(options) if options.get('resume') else _new_config(options)
    check_model_name(config.model)
    _check_training_options(config)
    _check_output(config)
    device_info = init_distributed_device_so(config.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    try:
        return Trainer(config, device_info, on_epoch_end).train()
    finally:
        if device_info['distributed']:
            dist.destroy_process_group()


def _new_config(options: Dict[str, Any]) -> FinetuneConfig:
    if not options.get('model'):
        raise InvalidArgumentError('a model is needed (or resume=True / --resume to continue the run in --output)')
    return FinetuneConfig(**options)


def _resumed_config(options: Dict[str, Any]) -> FinetuneConfig:
    """The recipe stored in the checkpoint under ``output``, with the options given (checked to agree)."""
    output = Path(options.get('output', FinetuneConfig.output))
    last = find_last(output)
    if last is None:
        raise MissingFileError(f'resume: no checkpoint under {output} (expected {output / "last"})')
    state = read_training_state(last)
    saved = state['config']
    # The saved recipe says how the run was started (overwrite=True, say); this call resumes it, and
    # FinetuneConfig refuses an overwrite=True given with it.
    config = FinetuneConfig(**{**saved, 'overwrite': False, **options})
    given = config_json(config)  # normalised like the saved recipe
    check_resumable(saved, {k: given[k] for k in options}, state['epoch'], last)
    return config


def _check_training_options(config: FinetuneConfig) -> None:
    """The checks that need torch or timm (FinetuneConfig's own checks need neither)."""
    if config.opt.lower() not in list_optimizers():
        raise InvalidArgumentError(f'opt={config.opt!r} is not a timm optimizer'
                                   + did_you_mean(config.opt.lower(), list_optimizers()))
    if config.sched not in SCHEDULERS:
        raise InvalidArgumentError(f'sched={config.sched!r} is not a timm scheduler; use one of {", ".join(SCHEDULERS)}')
    if config.auto_augment:
        try:  # timm parses the policy string only when it builds the transform, and asserts on a bad one
            create_transform(32, is_training=True, auto_augment=config.auto_augment)
        except (AssertionError, ValueError, KeyError, IndexError) as e:
            raise InvalidArgumentError(
                f'auto_augment={config.auto_augment!r} is not a timm auto-augment policy ({e}); use e.g. '
                "'rand-m9-mstd0.5', 'augmix-m5-w4-d2', 'original' or 'v0'") from None
    if config.device is not None:
        try:
            device = torch.device(config.device)
        except RuntimeError:
            raise InvalidArgumentError(f'device={config.device!r} is not a torch device (cpu, cuda, cuda:1, ...)') from None
        available = {'cpu': True, 'cuda': torch.cuda.is_available(), 'mps': torch.backends.mps.is_available()}
        if not available.get(device.type, False):
            raise InvalidArgumentError(f'device={config.device!r} is not available on this machine; use --device cpu')
        if device.type == 'cuda' and device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidArgumentError(f'device={config.device!r}: this machine has {torch.cuda.device_count()} CUDA devices')


def _check_output(config: FinetuneConfig) -> None:
    output = Path(config.output)
    # (A resumed config comes from _resumed_config, which has found the checkpoint already.)
    if not config.resume and not config.overwrite and find_last(output) is not None:
        raise InvalidArgumentError(
            f'{output} already holds a checkpoint; pass resume=True (--resume) to continue it, overwrite=True '
            '(--overwrite) to replace it, or choose another output directory')


