"""Fine-tune any se_zoo or timm model on an ImageFolder directory or Fashion-MNIST, on timm's training components.

``finetune('se_resnet18', 'fashion-mnist', epochs=3)`` (or ``se-zoo finetune``) trains with ``timm.data``
transforms (and ``timm.data.Mixup`` if asked), ``timm.optim.create_optimizer_v2``, ``timm.scheduler``
and ``timm.loss``, evaluates after every epoch and writes, under ``output``:

- ``best/``: the best-evaluating weights as a publish-ready folder (``se_zoo.hub.save_folder``: model.safetensors,
  timm's config.json, a model card with the measured accuracy), ready for ``se_zoo.hub.push_folder``;
- ``last/``: the same for the latest epoch, plus ``training_state.safetensors`` / ``training_state.json``
  (optimizer and scheduler state, epoch, history; no pickle) from which ``resume=True`` continues.

Each checkpoint folder is built next to its final place and swapped in by renames, so an interruption leaves
the previous checkpoint, never a partial one. All randomness of an epoch (shuffling, augmentation, mixup, dropout)
is seeded from ``(seed, epoch, rank)``, so a resumed run repeats the uninterrupted one exactly.

Launched by ``torchrun --nproc-per-node N``, the same call trains data-parallel (DDP; nccl on GPUs, gloo on CPU):
``batch_size`` is per process, the global batch is ``batch_size * world_size``.
"""
import dataclasses
import difflib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ['FinetuneConfig', 'EpochStats', 'FinetuneResult', 'finetune', 'TRAINING_STATE_NAME']

TRAINING_STATE_NAME = 'training_state'
# Config fields that define the optimisation trajectory: resuming with a different value would not continue
# the same run, so it is refused. (Others, e.g. workers or progress, may change between sessions.)
_RESUME_MUST_MATCH = (
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
                raise ValueError(f'{name}={value!r} must be a positive integer')
        if not self.lr > 0:
            raise ValueError(f'lr={self.lr!r} must be > 0')
        if self.resume and self.overwrite:
            raise ValueError('give either resume=True (continue the checkpoint) or overwrite=True (replace it), not both')
        if self.pretrained and self.init:
            raise ValueError('give either pretrained=True (published weights) or init=PATH (local weights), not both')
        if self.workers < 0:
            raise ValueError(f'workers={self.workers!r} must be >= 0')


@dataclass
class EpochStats:
    """Metrics of one epoch; accuracies are top-1 in percent, counts are over all processes."""
    epoch: int
    train_loss: float
    train_accuracy: float
    eval_loss: float
    eval_accuracy: float
    train_samples: int
    eval_samples: int
    images_per_second: float
    seconds: float


@dataclass
class FinetuneResult:
    """What ``finetune`` produced: the trained model (last epoch), its history and the checkpoint folders."""
    model: nn.Module
    history: List[EpochStats]
    best_accuracy: float
    best_epoch: int
    best_dir: Path
    last_dir: Path
    rank: int
    world_size: int
    global_batch_size: int
    steps_per_epoch: int

    @property
    def final_accuracy(self) -> float:
        return self.history[-1].eval_accuracy


def finetune(
        model: str,
        data: Union[str, Path] = 'fashion-mnist',
        *,
        on_epoch_end: Optional[Callable[[EpochStats], None]] = None,
        **options: Any,
) -> FinetuneResult:
    """Fine-tune ``model`` (any se_zoo or timm model name) on ``data`` and write checkpoints under ``output``.

    Args:
        model: a model name (``se_zoo.list_models()`` or ``timm.list_models()``).
        data: ``'fashion-mnist'`` (the Debian package ``dataset-fashion-mnist``) or an ImageFolder root holding
            ``train/`` and ``val/`` (or ``validation/``, ``test/``), each ``<class>/<images>``.
        on_epoch_end: called with each epoch's ``EpochStats`` after its checkpoint is written (on every process).
        **options: any ``FinetuneConfig`` field, e.g. ``output``, ``epochs``, ``batch_size`` (per process),
            ``lr``, ``opt``, ``sched``, ``img_size``, ``pretrained``, ``init`` (a local safetensors file or
            publish-ready folder), ``model_kwargs``, ``add_se`` and ``se_kwargs`` (retrofit SE first, see
            ``se_zoo.add_se``), ``mixup``/``cutmix``/``smoothing``, ``seed``, ``resume``.

    Returns:
        A ``FinetuneResult``; the best weights are a publish-ready folder at ``result.best_dir``.
    """
    config = FinetuneConfig(model=model, data=str(data), **options)
    return _Run(config, on_epoch_end).run()


class _Run:
    """One fine-tuning run: setup (every check before anything is written), the epoch loop, checkpoints."""

    def __init__(self, config: FinetuneConfig, on_epoch_end: Optional[Callable[[EpochStats], None]]) -> None:
        self.config = config
        self.on_epoch_end = on_epoch_end
        self.output = Path(config.output)
        self.last_dir = self.output / 'last'
        self.best_dir = self.output / 'best'

    # ---- setup -------------------------------------------------------------------------------------------
    def run(self) -> FinetuneResult:
        from timm.utils.distributed import init_distributed_device_so
        config = self.config
        _check_model_name(config.model)
        self._check_output()
        device = config.device or ('cuda' if torch.cuda.is_available() else 'cpu')
        info = init_distributed_device_so(device)
        self.device = torch.device(info['device'])
        self.rank, self.world_size = info['global_rank'], info['world_size']
        self.distributed = info['distributed']
        try:
            return self._train()
        finally:
            if self.distributed:
                dist.destroy_process_group()

    def _check_output(self) -> None:
        has_checkpoint = _find_last(self.output) is not None
        if self.config.resume and not has_checkpoint:
            raise FileNotFoundError(f'resume: no checkpoint under {self.output} (expected {self.last_dir})')
        if not self.config.resume and not self.config.overwrite and has_checkpoint:
            raise ValueError(f'{self.output} already holds a checkpoint; pass resume=True (--resume) to continue '
                             f'it, overwrite=True (--overwrite) to replace it, or choose another output directory')

    def _train(self) -> FinetuneResult:
        from .data import create_datasets
        config = self.config
        _seed_everything(config.seed, -1, self.rank)
        train_set, eval_set, classes = create_datasets(config.data, config.train_samples, config.eval_samples)
        self.classes = list(classes)
        model = self._create_model(len(classes))
        self.data_config = self._data_config(model)
        _describe_inputs(model, self.data_config, self.classes)
        train_loader, self.train_sampler = self._train_loader(train_set)
        self.steps_per_epoch = len(train_loader)
        eval_loader = self._eval_loader(eval_set)
        model.to(self.device)

        optimizer, scheduler, train_loss_fn, mixup_fn = self._optimization(model, len(train_loader))
        state = self._load_resume_state(model, optimizer, scheduler) if config.resume else None
        start_epoch = state['epoch'] if state else 0
        history = [EpochStats(**h) for h in state['history']] if state else []
        best = state['best'] if state else {'accuracy': -1., 'epoch': -1}
        if start_epoch > 0:
            scheduler.step_update(start_epoch * len(train_loader))

        train_model = model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel
            train_model = DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == 'cuda' else None)
        eval_loss_fn = nn.CrossEntropyLoss()
        amp = config.amp if config.amp is not None else self.device.type == 'cuda'
        self.autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp)

        for epoch in range(start_epoch, config.epochs):
            _seed_everything(config.seed, epoch, self.rank)
            self.train_sampler.set_epoch(epoch)
            start = time.perf_counter()
            train_loss, train_acc, train_count = self._train_epoch(
                train_model, train_loader, optimizer, scheduler, train_loss_fn, mixup_fn, epoch)
            train_seconds = time.perf_counter() - start
            eval_loss, eval_acc, eval_count = self._evaluate(model, eval_loader, eval_loss_fn)
            scheduler.step(epoch + 1)
            stats = EpochStats(
                epoch=epoch, train_loss=train_loss, train_accuracy=train_acc, eval_loss=eval_loss,
                eval_accuracy=eval_acc, train_samples=train_count, eval_samples=eval_count,
                images_per_second=train_count / train_seconds, seconds=time.perf_counter() - start)
            history.append(stats)
            improved = eval_acc > best['accuracy']
            if improved:
                best = {'accuracy': eval_acc, 'epoch': epoch}
            if self.rank == 0:
                self._save(model, optimizer, scheduler, history, best, improved)
                if config.progress:
                    print(f'epoch {epoch + 1}/{config.epochs}  train loss {train_loss:.4f} acc {train_acc:.2f}%  '
                          f'eval loss {eval_loss:.4f} acc {eval_acc:.2f}%  {stats.images_per_second:.0f} img/s  '
                          f'{stats.seconds:.1f}s{"  *best" if improved else ""}', flush=True)
            if self.distributed:
                dist.barrier()
            if self.on_epoch_end is not None:
                self.on_epoch_end(stats)

        return FinetuneResult(
            model=model, history=history, best_accuracy=best['accuracy'], best_epoch=best['epoch'],
            best_dir=self.best_dir, last_dir=self.last_dir, rank=self.rank, world_size=self.world_size,
            global_batch_size=config.batch_size * self.world_size, steps_per_epoch=len(train_loader))

    def _create_model(self, num_classes: int) -> nn.Module:
        import timm
        from .retrofit import add_se
        config = self.config
        kwargs = dict(config.model_kwargs, num_classes=num_classes)
        model = timm.create_model(config.model, pretrained=config.pretrained, **kwargs)
        init_state = _read_init(config.init) if config.init else None
        if config.add_se:
            # A retrofitted checkpoint (it has the SE tensors) loads after add_se, a plain one before it.
            if init_state is not None and not _has_extra_keys(init_state, model):
                _load_init(model, init_state, config.init)
                init_state = None
            add_se(model, **config.se_kwargs)
        if init_state is not None:
            _load_init(model, init_state, config.init)
        return model

    def _data_config(self, model: nn.Module) -> Dict[str, Any]:
        from timm.data import resolve_model_data_config
        data_config = resolve_model_data_config(model)
        if self.config.img_size:
            data_config['input_size'] = (data_config['input_size'][0], self.config.img_size, self.config.img_size)
        if self.config.data == 'fashion-mnist':
            data_config['crop_pct'] = 1.0  # the garments fill the 28x28 frame: a centre crop would cut them
        return data_config

    def _train_loader(self, dataset) -> Tuple[torch.utils.data.DataLoader, torch.utils.data.DistributedSampler]:
        from timm.data import create_transform
        from .data import TransformedDataset
        config, dc = self.config, self.data_config
        transform = create_transform(
            dc['input_size'], is_training=True, scale=config.scale, hflip=config.hflip,
            color_jitter=config.color_jitter, auto_augment=config.auto_augment, re_prob=config.re_prob,
            interpolation=dc['interpolation'], mean=dc['mean'], std=dc['std'])
        # A DistributedSampler also for one process: its order depends only on (seed, epoch), never on a
        # generator's history, which is what makes a resumed run identical to an uninterrupted one.
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=config.seed)
        mixing = config.mixup > 0 or config.cutmix > 0
        loader = torch.utils.data.DataLoader(
            TransformedDataset(dataset, transform), batch_size=config.batch_size, sampler=sampler,
            num_workers=config.workers, drop_last=mixing,  # timm's Mixup needs an even batch
            pin_memory=self.device.type == 'cuda')
        if len(loader) == 0:
            raise ValueError(f'{len(dataset)} training images give no batch of {config.batch_size} per process')
        return loader, sampler

    def _eval_loader(self, dataset) -> torch.utils.data.DataLoader:
        from timm.data import create_transform
        from .data import TransformedDataset
        dc = self.data_config
        transform = create_transform(
            dc['input_size'], is_training=False, crop_pct=dc['crop_pct'], crop_mode=dc.get('crop_mode'),
            interpolation=dc['interpolation'], mean=dc['mean'], std=dc['std'])
        # Every process evaluates a disjoint stride of the set (no padding), and the sums are all-reduced.
        shard = torch.utils.data.Subset(TransformedDataset(dataset, transform),
                                        range(self.rank, len(dataset), self.world_size))
        return torch.utils.data.DataLoader(
            shard, batch_size=2 * self.config.batch_size, shuffle=False, num_workers=self.config.workers,
            pin_memory=self.device.type == 'cuda')

    def _optimization(self, model: nn.Module, updates_per_epoch: int):
        from timm.data import Mixup
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        config = self.config
        optimizer = create_optimizer_v2(
            model, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum)
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=config.sched, num_epochs=config.epochs, warmup_epochs=config.warmup_epochs,
            min_lr=config.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
        mixup_fn = None
        if config.mixup > 0 or config.cutmix > 0:
            mixup_fn = Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix,
                             label_smoothing=config.smoothing, num_classes=len(self.classes))
            loss_fn = SoftTargetCrossEntropy()
        elif config.smoothing > 0:
            loss_fn = LabelSmoothingCrossEntropy(smoothing=config.smoothing)
        else:
            loss_fn = nn.CrossEntropyLoss()
        return optimizer, scheduler, loss_fn, mixup_fn

    # ---- the loop ----------------------------------------------------------------------------------------
    def _train_epoch(self, model, loader, optimizer, scheduler, loss_fn, mixup_fn, epoch: int):
        from tqdm import tqdm
        model.train()
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
        step = epoch * len(loader)
        start = time.perf_counter()
        # disable=None: a bar on a terminal only, so logs get the per-epoch lines without carriage-return noise.
        bar = tqdm(loader, desc=f'epoch {epoch + 1}/{self.config.epochs}', unit='batch', leave=False,
                   disable=None if self.config.progress and self.rank == 0 else True, dynamic_ncols=True)
        for images, targets in bar:
            images, targets = images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            inputs, soft_targets = mixup_fn(images, targets) if mixup_fn is not None else (images, targets)
            with self.autocast():
                logits = model(inputs)
                loss = loss_fn(logits, soft_targets)
            if not torch.isfinite(loss):
                raise RuntimeError(f'the training loss became {loss.item()} at epoch {epoch + 1}; lower the lr')
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
            n = targets.shape[0]
            totals += torch.tensor([loss.item() * n, (logits.argmax(-1) == targets).sum().item(), n],
                                   dtype=torch.float64)
            bar.set_postfix(loss=f'{totals[0] / totals[2]:.3f}', acc=f'{100 * totals[1] / totals[2]:.1f}%',
                            img_s=f'{self.world_size * totals[2] / (time.perf_counter() - start):.0f}')
        loss_sum, correct, count = self._all_reduce(totals)
        return loss_sum / count, 100 * correct / count, int(count)

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, loader, loss_fn):
        model.eval()
        totals = torch.zeros(3, dtype=torch.float64)
        for images, targets in loader:
            images, targets = images.to(self.device), targets.to(self.device)
            with self.autocast():
                logits = model(images)
            n = targets.shape[0]
            totals += torch.tensor([loss_fn(logits.float(), targets).item() * n,
                                    (logits.argmax(-1) == targets).sum().item(), n], dtype=torch.float64)
        loss_sum, correct, count = self._all_reduce(totals)
        return loss_sum / count, 100 * correct / count, int(count)

    def _all_reduce(self, totals: torch.Tensor) -> List[float]:
        if self.distributed:
            reduced = totals.to(self.device)
            dist.all_reduce(reduced)
            totals = reduced.cpu()
        return totals.tolist()

    # ---- checkpoints -------------------------------------------------------------------------------------
    def _model_card(self, accuracy: float, epoch: int) -> Dict[str, Any]:
        config = self.config
        dataset = 'fashion_mnist' if config.data == 'fashion-mnist' else Path(config.data).name
        size = self.data_config['input_size'][-1]
        recipe = (f'se-zoo finetune: {epoch + 1} of {config.epochs} epochs at {size}px, {config.opt} lr {config.lr} '
                  f'wd {config.weight_decay}, {config.sched} schedule, global batch '
                  f'{config.batch_size * self.world_size}, label smoothing {config.smoothing}, seed {config.seed}')
        card = {'datasets': [dataset], 'metrics': {'top1': round(accuracy, 2)}, 'source': 'trained with se_zoo.finetune',
                'recipe': recipe}
        if config.add_se:
            card['description'] = (
                f'timm `{config.model}` retrofitted with `se_zoo.add_se(model, **{config.se_kwargs!r})`. '
                f'Rebuild it with `timm.create_model({config.model!r}, num_classes={len(self.classes)})` and '
                f'`se_zoo.add_se(...)` before loading model.safetensors.')
        return card

    def _save(self, model, optimizer, scheduler, history: List[EpochStats], best: Dict[str, Any],
              improved: bool) -> None:
        from safetensors.torch import save_file
        from .hub import save_folder, write_folder_atomically
        epoch = history[-1].epoch
        self.output.mkdir(parents=True, exist_ok=True)
        card = self._model_card(history[-1].eval_accuracy, epoch)

        def write_last(folder: Path) -> None:
            save_folder(model, folder, model_card=card)
            tensors, optimizer_meta = _optimizer_state(optimizer)
            save_file(tensors, str(folder / f'{TRAINING_STATE_NAME}.safetensors'))
            meta = {
                'epoch': epoch + 1, 'best': best, 'history': [dataclasses.asdict(h) for h in history],
                'config': _config_json(self.config), 'world_size': self.world_size,
                'global_batch_size': self.config.batch_size * self.world_size,
                'steps_per_epoch': self.steps_per_epoch,
                'optimizer': optimizer_meta, 'scheduler': scheduler.state_dict(),
            }
            (folder / f'{TRAINING_STATE_NAME}.json').write_text(json.dumps(meta, indent=2))

        write_folder_atomically(self.last_dir, write_last)
        if improved:
            write_folder_atomically(self.best_dir, lambda folder: save_folder(model, folder, model_card=card))

    def _load_resume_state(self, model, optimizer, scheduler) -> Dict[str, Any]:
        from safetensors.torch import load_file
        last = _find_last(self.output)
        meta = json.loads((last / f'{TRAINING_STATE_NAME}.json').read_text())
        saved, current = meta['config'], _config_json(self.config)
        changed = [k for k in _RESUME_MUST_MATCH if saved.get(k) != current.get(k)]
        if changed:
            raise ValueError(f'resume: the checkpoint in {last} was trained with different ' + ', '.join(
                f'{k} ({saved.get(k)!r}, now {current.get(k)!r})' for k in changed))
        model.load_state_dict(load_file(str(last / 'model.safetensors')))
        tensors = load_file(str(last / f'{TRAINING_STATE_NAME}.safetensors'))
        optimizer.load_state_dict(_optimizer_state_dict(tensors, meta['optimizer']))
        scheduler.load_state_dict(meta['scheduler'])
        return meta


# ---- helpers ------------------------------------------------------------------------------------------------

def _check_model_name(name: str) -> None:
    import timm
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f'; did you mean {", ".join(close)}?' if close else ''
        raise ValueError(f'unknown model {name!r}: not in se_zoo.list_models() or timm.list_models(){hint}')


def _seed_everything(seed: int, epoch: int, rank: int) -> None:
    # One independent stream per (seed, epoch, rank); epoch -1 seeds model construction, which every rank
    # shares (DDP also broadcasts rank 0's weights).
    rank = 0 if epoch < 0 else rank
    state = np.random.SeedSequence([seed, epoch + 1, rank]).generate_state(2)
    value = int(state[0]) << 32 | int(state[1])
    torch.manual_seed(value)
    np.random.seed(value % 2 ** 32)
    random.seed(value)


def _describe_inputs(model: nn.Module, data_config: Dict[str, Any], classes: Sequence[str]) -> None:
    # What the trained model expects goes to its config.json (timm's pretrained_cfg), so that
    # timm.data.resolve_model_data_config builds the right eval transform for the published weights.
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    for key in ('hf_hub_id', 'url', 'file', 'tag'):
        cfg.pop(key, None)  # they name the weights this run started from, not the ones it writes
    cfg.update({k: data_config[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct')})
    cfg.update(num_classes=len(classes), label_names=list(classes))
    model.pretrained_cfg = cfg


def _read_init(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    path = Path(path)
    file = path / 'model.safetensors' if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f'init weights {file} not found (give a .safetensors file or a publish-ready folder)')
    if file.suffix != '.safetensors':
        raise ValueError(f'init weights must be a .safetensors file or a folder holding model.safetensors, got {file}')
    return load_file(str(file))


def _has_extra_keys(state: Dict[str, torch.Tensor], model: nn.Module) -> bool:
    return bool(set(state) - set(model.state_dict()))


def _load_init(model: nn.Module, state: Dict[str, torch.Tensor], source: Union[str, Path]) -> None:
    # A new task has a new classifier: drop the checkpoint's head where its shape differs (timm does the same
    # when num_classes differs from the pretrained one); every other tensor must match.
    own = model.state_dict()
    head = model.pretrained_cfg.get('classifier')
    heads = (head,) if isinstance(head, str) else tuple(head or ())
    state = {k: v for k, v in state.items()
             if not (k.split('.')[0] in {h.split('.')[0] for h in heads} and k in own and own[k].shape != v.shape)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not any(k.startswith(h + '.') for h in heads)]
    if missing or result.unexpected_keys:
        raise ValueError(f'init weights {source} do not fit {model.pretrained_cfg.get("architecture")}: '
                         f'missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}')


def _optimizer_state(optimizer: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state_dict['state'].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f'{param_id}.{name}'] = value.detach().cpu().contiguous()
            else:
                scalars[f'{param_id}.{name}'] = value
    return tensors, {'param_groups': state_dict['param_groups'], 'scalars': scalars}


def _optimizer_state_dict(tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta['scalars'].items()):
        param_id, name = key.split('.', 1)
        state.setdefault(int(param_id), {})[name] = value
    return {'state': state, 'param_groups': meta['param_groups']}


def _config_json(config: FinetuneConfig) -> Dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _find_last(output: Path) -> Optional[Path]:
    last = output / 'last'
    if last.is_dir():
        return last
    # the swap into last/ was interrupted between its two renames: the previous checkpoint is whole under this name.
    previous = sorted(output.glob('.last.old-*'), key=lambda p: p.stat().st_mtime)
    return previous[-1] if previous else None


