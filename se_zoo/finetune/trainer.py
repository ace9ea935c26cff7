"""The fine-tuning loop: timm's transforms, optimizers, schedulers and losses around an se_zoo or timm model."""
import dataclasses
from dataclasses import dataclass, field
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import load_file, save_file
from timm.data import Mixup, create_transform, resolve_model_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from tqdm import tqdm

from ..data import (
    FASHION_MNIST, TransformedDataset, UnreadableImage, collate_readable, create_datasets, dataset_image_paths,
    eval_split_name, find_unreadable_images,
)
from ..errors import InvalidArgumentError, SEZooError
from ..files import write_folder_atomically
from ..hub.publish import save_folder
from ..models import load_model
from ..retrofit import add_se, name_as_se_zoo_architecture
from .checkpoint import (
    TRAINING_STATE_NAME, config_json, find_last, has_extra_keys, init_model_args, load_init, optimizer_state,
    optimizer_state_dict, read_init, read_training_state,
)
from .config import FinetuneConfig

__all__ = [
    'EpochStats', 'FinetuneResult', 'Trainer', 'TrainingDivergedError', 'UnreadableImagesError', 'create_schedule',
]

_logger = logging.getLogger(__name__)

# How many of the unreadable files an error message names.
_NAMED_FILES = 3


class TrainingDivergedError(SEZooError, RuntimeError):
    """The training loss became NaN or infinite; the last checkpoint written is the last good one."""


class UnreadableImagesError(InvalidArgumentError):
    """More of the data's images are unreadable than ``max_unreadable`` allows; the message names some."""


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
    skipped: int = 0  # unreadable images met (and left out) in this epoch, training and evaluation


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
    eval_split: str = 'test'  # the split the accuracies were measured on
    unreadable: Dict[str, str] = field(default_factory=dict)  # every image skipped so far: path -> error

    @property
    def final_accuracy(self) -> float:
        return self.history[-1].eval_accuracy


class Trainer:
    """One fine-tuning run on one process: data, model, optimisation and checkpoints, all set up (and every input
    checked) before the first epoch; ``train()`` runs the epochs. ``se_zoo.finetune.finetune`` creates it after
    joining the process group described by ``device_info`` (timm's ``init_distributed_device_so``)."""

    def __init__(self, config: FinetuneConfig, device_info: Dict[str, Any],
                 on_epoch_end: Optional[Callable[[EpochStats], None]] = None) -> None:
        self.config = config
        self.on_epoch_end = on_epoch_end
        self.output = Path(config.output)
        self.last_dir = self.output / 'last'
        self.best_dir = self.output / 'best'
        self.device = torch.device(device_info['device'])
        self.rank, self.world_size = device_info['global_rank'], device_info['world_size']
        self.distributed = device_info['distributed']
        self.amp = config.amp if config.amp is not None else self.device.type == 'cuda'
        self.se_zoo_architecture: Optional[str] = None  # what an --add-se retrofit became, if se_zoo has it
        _seed_everything(config.seed, -1, self.rank)
        # Listed, not read: an unreadable image is skipped and counted when met (or found by check_images).
        train_set, eval_set, classes = create_datasets(
            config.data, config.train_samples, config.eval_samples, skip_unreadable=True)
        self.num_images = len(train_set) + len(eval_set)
        self.unreadable: Dict[str, str] = {}  # path -> error, every unreadable image met by this run
        if config.check_images:
            self._check_images(dataset_image_paths(train_set) + dataset_image_paths(eval_set))
        self.eval_split = eval_split_name(config.data)
        self.classes = list(classes)
        self.model = self._create_model(len(classes))
        self.data_config = self._data_config(self.model)
        _describe_inputs(self.model, self.data_config, self.classes)
        self.train_loader, self.train_sampler = self._train_loader(train_set)
        self.eval_loader = self._eval_loader(eval_set)
        self.steps_per_epoch = len(self.train_loader)
        self.model.to(self.device)

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast when mixed precision is on (the default on CUDA), else a no-op context."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def train(self) -> FinetuneResult:
        """Run the remaining epochs, writing ``last/`` after each and ``best/`` when it improves."""
        config, model, train_loader = self.config, self.model, self.train_loader
        optimizer, scheduler, train_loss_fn, mixup_fn = self._optimization(model, len(train_loader))
        state = self._load_resume_state(model, optimizer, scheduler) if config.resume else None
        start_epoch = state['epoch'] if state else 0
        history = [EpochStats(**h) for h in state['history']] if state else []
        best = state['best'] if state else {'accuracy': -1., 'epoch': -1}
        if state:
            self.unreadable.update(state.get('unreadable', {}))
        if start_epoch > 0:
            scheduler.step_update(start_epoch * len(train_loader))

        train_model = model
        if self.distributed:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == 'cuda' else None)
        eval_loader, eval_loss_fn = self.eval_loader, nn.CrossEntropyLoss()

        for epoch in range(start_epoch, config.epochs):
            _seed_everything(config.seed, epoch, self.rank)
            self.train_sampler.set_epoch(epoch)
            start = time.perf_counter()
            train_loss, train_acc, train_count, train_skipped = self._train_epoch(
                train_model, train_loader, optimizer, scheduler, train_loss_fn, mixup_fn, epoch)
            train_seconds = time.perf_counter() - start
            eval_loss, eval_acc, eval_count, eval_skipped = self._evaluate(model, eval_loader, eval_loss_fn)
            self._gather_unreadable()
            scheduler.step(epoch + 1)
            stats = EpochStats(
                epoch=epoch, train_loss=train_loss, train_accuracy=train_acc, eval_loss=eval_loss,
                eval_accuracy=eval_acc, train_samples=train_count, eval_samples=eval_count,
                images_per_second=train_count / train_seconds, seconds=time.perf_counter() - start,
                skipped=train_skipped + eval_skipped)
            history.append(stats)
            improved = eval_acc > best['accuracy']
            if improved:
                best = {'accuracy': eval_acc, 'epoch': epoch}
            if self.rank == 0:
                self._save(model, optimizer, scheduler, history, best, improved)
                if config.progress:
                    print(f'epoch {epoch + 1}/{config.epochs}  train loss {train_loss:.4f} acc {train_acc:.2f}%  '
                          f'{self.eval_split} loss {eval_loss:.4f} acc {eval_acc:.2f}%  {stats.images_per_second:.0f} img/s  '
                          f'{stats.seconds:.1f}s'
                          + (f'  skipped {stats.skipped} unreadable' if stats.skipped else '')
                          + ('  *best' if improved else ''), flush=True)
            if self.distributed:
                dist.barrier()
            if self.on_epoch_end is not None:
                self.on_epoch_end(stats)

        return FinetuneResult(
            model=model, history=history, best_accuracy=best['accuracy'], best_epoch=best['epoch'],
            best_dir=self.best_dir, last_dir=self.last_dir, rank=self.rank, world_size=self.world_size,
            global_batch_size=config.batch_size * self.world_size, steps_per_epoch=len(train_loader),
            eval_split=self.eval_split, unreadable=dict(self.unreadable))

    def _create_model(self, num_classes: int) -> nn.Module:
        config = self.config
        # a folder to start from brings the architecture keywords it was built with (its config.json)
        kwargs = dict(init_model_args(config.init, config.model) if config.init else {}, **config.model_kwargs,
                      num_classes=num_classes)
        try:
            # a tag, an hf-hub: repo or a folder brings its weights; a bare name only with --pretrained
            model = load_model(config.model, pretrained=True if config.pretrained else None, **kwargs)
        except TypeError as e:  # an architecture keyword the model does not take
            raise InvalidArgumentError(f'model_kwargs={config.model_kwargs!r} do not fit {config.model}: {e}') from e
        init_state = read_init(config.init) if config.init else None
        if config.add_se:
            # A retrofitted checkpoint (it has the SE tensors) loads after add_se, a plain one before it.
            if init_state is not None and not has_extra_keys(init_state, model):
                load_init(model, init_state, config.init)
                init_state = None
            add_se(model, **config.se_kwargs)
            self.se_zoo_architecture = name_as_se_zoo_architecture(model, **config.se_kwargs)
        if init_state is not None:
            load_init(model, init_state, config.init)
        return model

    def _data_config(self, model: nn.Module) -> Dict[str, Any]:
        data_config = resolve_model_data_config(model)
        if self.config.img_size:
            data_config['input_size'] = (data_config['input_size'][0], self.config.img_size, self.config.img_size)
        if self.config.data == FASHION_MNIST:
            data_config['crop_pct'] = 1.0  # the garments fill the 28x28 frame: a centre crop would cut them
        return data_config

    def _train_loader(self, dataset) -> Tuple[torch.utils.data.DataLoader, torch.utils.data.DistributedSampler]:
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
            pin_memory=self.device.type == 'cuda', collate_fn=collate_readable)
        if len(loader) == 0:
            raise InvalidArgumentError(f'{len(dataset)} training images give no batch of {config.batch_size} per process')
        return loader, sampler

    def _eval_loader(self, dataset) -> torch.utils.data.DataLoader:
        dc = self.data_config
        transform = create_transform(
            dc['input_size'], is_training=False, crop_pct=dc['crop_pct'], crop_mode=dc.get('crop_mode'),
            interpolation=dc['interpolation'], mean=dc['mean'], std=dc['std'])
        # Every process evaluates a disjoint stride of the set (no padding), and the sums are all-reduced.
        shard = torch.utils.data.Subset(TransformedDataset(dataset, transform),
                                        range(self.rank, len(dataset), self.world_size))
        return torch.utils.data.DataLoader(
            shard, batch_size=2 * self.config.batch_size, shuffle=False, num_workers=self.config.workers,
            pin_memory=self.device.type == 'cuda', collate_fn=collate_readable)

    def _optimization(self, model: nn.Module, updates_per_epoch: int):
        config = self.config
        optimizer = create_optimizer_v2(
            model, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum)
        scheduler = create_schedule(optimizer, config, updates_per_epoch)
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
        model.train()
        totals = torch.zeros(4, dtype=torch.float64)  # loss sum, correct, count, skipped
        step = epoch * len(loader)
        start = time.perf_counter()
        # disable=None: a bar on a terminal only, so logs get the per-epoch lines without carriage-return noise.
        bar = tqdm(loader, desc=f'epoch {epoch + 1}/{self.config.epochs}', unit='batch', leave=False,
                   disable=None if self.config.progress and self.rank == 0 else True, dynamic_ncols=True)
        for images, targets, unreadable in bar:
            totals[3] += self._skip(unreadable)
            if images is None:  # not one image of the batch was readable
                if self.distributed:  # every process must take each step, or DDP's gradient all-reduce waits forever
                    raise self._unreadable_error(f'a whole batch of {self.config.batch_size} images is unreadable')
                continue
            if mixup_fn is not None and len(images) % 2:  # timm's Mixup needs an even batch
                images, targets = images[:-1], targets[:-1]
            images, targets = images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            inputs, soft_targets = mixup_fn(images, targets) if mixup_fn is not None else (images, targets)
            with self.autocast():
                logits = model(inputs)
                loss = loss_fn(logits, soft_targets)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f'the training loss became {loss.item()} at epoch {epoch + 1}; lower the lr')
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
            n = targets.shape[0]
            totals[:3] += torch.tensor([loss.item() * n, (logits.argmax(-1) == targets).sum().item(), n],
                                       dtype=torch.float64)
            bar.set_postfix(loss=f'{totals[0] / totals[2]:.3f}', acc=f'{100 * totals[1] / totals[2]:.1f}%',
                            img_s=f'{self.world_size * totals[2] / (time.perf_counter() - start):.0f}')
        loss_sum, correct, count, skipped = self._all_reduce(totals)
        if count == 0:
            raise self._unreadable_error('no training image is readable')
        return loss_sum / count, 100 * correct / count, int(count), int(skipped)

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, loader, loss_fn):
        model.eval()
        totals = torch.zeros(4, dtype=torch.float64)  # loss sum, correct, count, skipped
        for images, targets, unreadable in loader:
            totals[3] += self._skip(unreadable)
            if images is None:
                continue
            images, targets = images.to(self.device), targets.to(self.device)
            with self.autocast():
                logits = model(images)
            n = targets.shape[0]
            totals[:3] += torch.tensor([loss_fn(logits.float(), targets).item() * n,
                                        (logits.argmax(-1) == targets).sum().item(), n], dtype=torch.float64)
        loss_sum, correct, count, skipped = self._all_reduce(totals)
        if count == 0:
            raise self._unreadable_error(f'no image of the {self.eval_split} split is readable')
        return loss_sum / count, 100 * correct / count, int(count), int(skipped)

    # ---- unreadable images -------------------------------------------------------------------------------
    def _check_images(self, paths: List[str]) -> None:
        """Decode every image up front (check_images=True), each process a stride of them in worker processes."""
        found = find_unreadable_images(paths[self.rank::self.world_size], workers=self.config.workers,
                                       progress=self.config.progress and self.rank == 0)
        self._skip([UnreadableImage(path, error) for path, error in found.items()], log=False)
        self._gather_unreadable()
        if self.unreadable and self.rank == 0:  # named once in the log, all together
            _logger.warning('found %d unreadable images, which training will skip: %s', len(self.unreadable),
                            '; '.join(f'{path}: {error}' for path, error in sorted(self.unreadable.items())))

    def _skip(self, unreadable: List[UnreadableImage], log: bool = True) -> int:
        """Record the unreadable images of a batch (each named in the log once); stop the run once they pass
        ``max_unreadable``. Returns how many there were."""
        for image in unreadable:
            if image.path not in self.unreadable:
                self.unreadable[image.path] = image.error
                if log:
                    _logger.warning('skipped unreadable image %s: %s', image.path, image.error)
        if len(self.unreadable) > self.config.max_unreadable * self.num_images:
            raise self._unreadable_error()
        return len(unreadable)

    def _gather_unreadable(self) -> None:
        # Each process meets the images of its own shard (and has logged those): all of them know all.
        if self.distributed:
            found: List[Dict[str, str]] = [{} for _ in range(self.world_size)]
            dist.all_gather_object(found, self.unreadable)
            for part in found:
                self._skip([UnreadableImage(path, error) for path, error in part.items()], log=False)

    def _unreadable_error(self, reason: Optional[str] = None) -> UnreadableImagesError:
        n, paths = len(self.unreadable), sorted(self.unreadable)
        named = ', '.join(paths[:_NAMED_FILES]) + (f' and {n - _NAMED_FILES} more' if n > _NAMED_FILES else '')
        reason = reason or (f'{n} of its {self.num_images} images ({n / self.num_images:.2%}) are unreadable, more '
                            f'than max_unreadable={self.config.max_unreadable:g} (--max-unreadable) allows')
        return UnreadableImagesError(f'{self.config.data}: {reason}: {named}; replace or remove them, or run '
                                     f'with --check-images to find them all up front')

    def _all_reduce(self, totals: torch.Tensor) -> List[float]:
        if self.distributed:
            reduced = totals.to(self.device)
            dist.all_reduce(reduced)
            totals = reduced.cpu()
        return totals.tolist()

    # ---- checkpoints -------------------------------------------------------------------------------------
    def _model_card(self, accuracy: float, epoch: int) -> Dict[str, Any]:
        config = self.config
        size = self.data_config['input_size'][-1]
        epochs = f'{config.epochs} epoch' + ('s' if config.epochs != 1 else '')
        recipe = (f'se-zoo finetune: {epoch + 1} of {epochs} at {size}px, {config.opt} lr {config.lr} '
                  f'wd {config.weight_decay}, {config.sched} schedule, global batch '
                  f'{config.batch_size * self.world_size}, label smoothing {config.smoothing}, seed {config.seed}')
        # A Hub dataset id for Fashion-MNIST; a local folder has none, so the card names the split instead.
        if config.data == FASHION_MNIST:
            card = {'datasets': ['zalando-datasets/fashion_mnist'], 'eval_dataset': 'fashion_mnist (test split)'}
        else:
            card = {'eval_dataset': f'local image folder ({self.eval_split} split)'}
        card.update(metrics={'top1': round(accuracy, 2)}, source='trained with se_zoo.finetune', recipe=recipe)
        if config.add_se and self.se_zoo_architecture:
            card['description'] = (
                f'timm `{config.model}` retrofitted with `se_zoo.add_se(model, **{config.se_kwargs!r})`, which makes '
                f'it an se_zoo `{self.se_zoo_architecture}`: the folder loads by that name.')
        elif config.add_se:
            card['description'] = (
                f'timm `{config.model}` retrofitted with `se_zoo.add_se(model, **{config.se_kwargs!r})`. '
                f'Rebuild it with `timm.create_model({config.model!r}, num_classes={len(self.classes)})` and '
                f'`se_zoo.add_se(...)` before loading model.safetensors.')
        return card

    def _save(self, model, optimizer, scheduler, history: List[EpochStats], best: Dict[str, Any],
              improved: bool) -> None:
        epoch = history[-1].epoch
        self.output.mkdir(parents=True, exist_ok=True)
        card = self._model_card(history[-1].eval_accuracy, epoch)

        def write_last(folder: Path) -> None:
            save_folder(model, folder, model_card=card)
            tensors, optimizer_meta = optimizer_state(optimizer)
            save_file(tensors, str(folder / f'{TRAINING_STATE_NAME}.safetensors'))
            meta = {
                'epoch': epoch + 1, 'best': best, 'history': [dataclasses.asdict(h) for h in history],
                'config': config_json(self.config), 'world_size': self.world_size,
                'global_batch_size': self.config.batch_size * self.world_size,
                'steps_per_epoch': self.steps_per_epoch,
                'optimizer': optimizer_meta, 'scheduler': scheduler.state_dict(),
                'unreadable': self.unreadable,
            }
            (folder / f'{TRAINING_STATE_NAME}.json').write_text(json.dumps(meta, indent=2))

        write_folder_atomically(self.last_dir, write_last)
        if improved:
            write_folder_atomically(self.best_dir, lambda folder: save_folder(model, folder, model_card=card))

    def _load_resume_state(self, model, optimizer, scheduler) -> Dict[str, Any]:
        # finetune() has checked the recipe against the checkpoint's (check_resumable) before building the Trainer.
        last = find_last(self.output)
        meta = read_training_state(last)
        saved, current = meta['config'], config_json(self.config)
        model.load_state_dict(load_file(str(last / 'model.safetensors')))
        tensors = load_file(str(last / f'{TRAINING_STATE_NAME}.safetensors'))
        optimizer.load_state_dict(optimizer_state_dict(tensors, meta['optimizer']))
        if saved['epochs'] == current['epochs']:
            scheduler.load_state_dict(meta['scheduler'])
        # else the run is extended: the schedule was planned anew over the new total by _optimization, and
        # train() steps it to the current update, so the lr continues on the longer schedule from here.
        return meta


# ---- helpers ------------------------------------------------------------------------------------------------

def create_schedule(optimizer: torch.optim.Optimizer, config: FinetuneConfig, updates_per_epoch: int) -> Scheduler:
    """The learning-rate schedule of a run: timm's ``create_scheduler_v2`` for ``config``, stepped every update."""
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=config.sched, num_epochs=config.epochs, warmup_epochs=config.warmup_epochs,
            min_lr=config.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    except ValueError as e:  # e.g. rsqrt without warmup, or a wsd decay shorter than one update
        raise InvalidArgumentError(
            f'sched={config.sched!r} cannot be planned for epochs={config.epochs}, '
            f'warmup_epochs={config.warmup_epochs} at {updates_per_epoch} updates per epoch: {e}') from e
    return scheduler


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


