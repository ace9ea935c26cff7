"""What the SE blocks do: their gate vectors on given images, and the paper's per-class excitation plot.

``excitations(model, images)`` reads the output of every SE layer's ``gate`` through forward hooks, so it works
on any model holding se_zoo's SE layer (se_zoo models and ``add_se`` retrofits). ``plot_class_excitations``
draws the figure of the paper's section "Role of Excitation" (Fig. 6 of arXiv:1709.01507): for a few SE
blocks from early to late, the mean excitation of each channel, one line per class. Early blocks excite
nearly the same channels for every class; late ones become class-specific.
"""
import io
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.data import create_transform, resolve_model_data_config

from .data import TransformedDataset, create_datasets
from .errors import InvalidArgumentError, MissingDependencyError, MissingFileError, check_positive_int
from .files import atomic_write_bytes
from .models import gate_module, load_model, named_se_modules

__all__ = ['excitations', 'class_mean_excitations', 'plot_class_excitations', 'inspect_excitations', 'se_block_names']


def se_block_names(model: nn.Module) -> List[str]:
    """Names of the model's SE blocks (se_zoo's and timm's), in module order (execution order for se_zoo models)."""
    return [name for name, _ in named_se_modules(model)]


@torch.no_grad()
def excitations(model: nn.Module, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The gate of every SE block for ``images``: ``{block name: tensor (N, C)}``, in the order the blocks run.

    The model is evaluated in eval mode (and put back in its previous mode). A block that runs more than once
    per forward keeps its last gate.

    Raises:
        InvalidArgumentError: the model has no SE block.
    """
    names = {m: name for name, m in named_se_modules(model)}
    if not names:
        raise InvalidArgumentError(f'{type(model).__name__} has no SE block; use an se_zoo model or '
                         f'se_zoo.add_se(model) first')
    gates: Dict[str, torch.Tensor] = OrderedDict()

    def record(name: str):
        def hook(module: nn.Module, args, output: torch.Tensor) -> None:
            gates.pop(name, None)  # re-insert, so the order is that of the last call
            gates[name] = output.detach().flatten(1).float().cpu()
        return hook

    handles = [gate_module(se).register_forward_hook(record(name)) for se, name in names.items()]
    was_training = model.training
    try:
        model.eval()
        model(images)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return gates


def class_mean_excitations(
        model: nn.Module,
        loader: torch.utils.data.DataLoader,
        num_classes: int,
        blocks: Optional[Sequence[str]] = None,
        device: Union[str, torch.device] = 'cpu',
) -> Dict[str, torch.Tensor]:
    """Per-class mean gate of each SE block over ``loader``: ``{block: tensor (num_classes, C)}``."""
    sums: Dict[str, torch.Tensor] = {}
    counts = torch.zeros(num_classes, dtype=torch.float64)
    model.to(device)
    for images, targets in loader:
        gates = excitations(model, images.to(device))
        one_hot = torch.nn.functional.one_hot(targets, num_classes).double()
        counts += one_hot.sum(0)
        for name, gate in gates.items():
            if blocks is None or name in blocks:
                sums[name] = sums.get(name, 0) + one_hot.T @ gate.double()
    if (counts == 0).any():
        raise InvalidArgumentError(f'classes {torch.nonzero(counts == 0).flatten().tolist()} have no images in the data')
    return {name: (total / counts[:, None]).float() for name, total in sums.items()}


def _pick_blocks(names: Sequence[str], count: int) -> List[str]:
    """Up to ``count`` blocks spread from first to last (the paper shows a few per stage, early to late)."""
    if len(names) <= count:
        return list(names)
    step = (len(names) - 1) / (count - 1)
    return [names[round(i * step)] for i in range(count)]


def plot_class_excitations(
        means: Dict[str, torch.Tensor],
        class_names: Sequence[str],
        path: Union[str, Path],
        title: Optional[str] = None,
) -> Path:
    """Plot per-class mean excitations (``class_mean_excitations``), one panel per block, to a PNG at ``path``."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingDependencyError("plotting needs matplotlib: pip install 'se-zoo[inspect]'") from e
    cols = min(3, len(means))
    rows = (len(means) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    colors = plt.get_cmap('tab10')
    for ax, (name, mean) in zip(axes.flat, means.items()):
        channels = torch.arange(mean.shape[1])
        for c, class_name in enumerate(class_names):
            ax.plot(channels, mean[c], lw=0.8, color=colors(c % 10), label=class_name)
        ax.plot(channels, mean.mean(0), lw=1.2, color='black', ls='--', label='all')
        ax.set_title(name, fontsize=9)
        ax.set_xlabel('channel index')
        ax.set_ylabel('mean excitation')
        ax.set_ylim(0, 1.05 if mean.max() <= 1 else float(mean.max()) * 1.05)
    for ax in list(axes.flat)[len(means):]:
        ax.axis('off')
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='lower center', ncol=min(6, len(labels)), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96 if title else 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def inspect_excitations(
        model: Union[str, nn.Module],
        output: Union[str, Path],
        data: str = 'fashion-mnist',
        num_samples: int = 2000,
        num_blocks: int = 6,
        batch_size: int = 100,
) -> Path:
    """``se-zoo inspect``: plot per-class mean excitations of ``model`` on ``data``'s eval split to ``output``.

    ``model`` is a model, a publish-ready folder (e.g. ``finetune``'s ``best/``), or a name timm can build
    (``local-dir:PATH``, ``hf-hub:ORG/NAME``, an se_zoo name). Images go through the model's own eval transform.
    """
    for name, value in (('num_samples', num_samples), ('num_blocks', num_blocks), ('batch_size', batch_size)):
        check_positive_int(name, value)
    output = Path(output)
    if output.suffix.lower() != '.png':
        raise InvalidArgumentError(f'{output}: the figure is written as PNG; give a path ending in .png')
    if not output.parent.is_dir():
        raise MissingFileError(f'{output.parent} does not exist; create it or choose another --out')
    if isinstance(model, (str, Path)):
        model = load_model(str(model))
    _, eval_set, classes = create_datasets(data, eval_samples=num_samples)
    if model.num_classes != len(classes):
        raise InvalidArgumentError(f'the model has {model.num_classes} classes, {data} has {len(classes)}: '
                         f'inspect a model fine-tuned on it')
    names = se_block_names(model)
    if not names:
        raise InvalidArgumentError(f'{type(model).__name__} has no SE block')
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    loader = torch.utils.data.DataLoader(TransformedDataset(eval_set, transform), batch_size=batch_size)
    blocks = _pick_blocks(names, num_blocks)
    means = class_mean_excitations(model, loader, len(classes), blocks=blocks)
    arch = model.pretrained_cfg.get('architecture', type(model).__name__)
    return plot_class_excitations(means, classes, output, title=f'{arch}: mean excitation per class ({len(eval_set)} images)')
