"""What every benchmark here measures with: the process settings, the interleaved timer and realistic BatchNorm.

- ``use_benchmark_allocator()``: the glibc allocator thresholds (and nothing else) that every CPU benchmark runs
  under, so that their timm-eager baselines are the same measurement. Call it first thing in ``__main__``.
- ``interleaved`` / ``median_ratio`` / ``ratio_quartiles``: ``se_zoo.deploy.timing``'s timer (the one
  ``precision='auto'`` uses), re-exported: A B A B ... rounds in rotating order, medians of per-round ratios.
- ``randomize_batchnorm``: non-trivial BN statistics (also tests/conftest.py's fixture).
"""
import os
import sys

import torch
import torch.nn as nn

from se_zoo.deploy.timing import interleaved, median_ratio, ratio_quartiles

__all__ = ['MALLOC_ENV', 'interleaved', 'median_ratio', 'randomize_batchnorm', 'ratio_quartiles',
           'use_benchmark_allocator']

# glibc hands every freed block above its mmap threshold back to the OS at once, so each PyTorch call page-faults
# its large activations in again (measured here: timm eager se_resnet50 at batch 8, 485 ms -> 302 ms with these
# set). Raised thresholds keep freed memory in the process, as jemalloc/tcmalloc or a tuned inference server
# would. ONNX Runtime and OpenVINO allocate from their own arenas either way.
MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': str(4 << 30), 'MALLOC_TRIM_THRESHOLD_': str(64 << 30)}


def use_benchmark_allocator() -> None:
    """Re-execute this script with ``MALLOC_ENV`` set, unless it already is: glibc reads it only at start-up."""
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm affine parameters and running statistics as a trained network has them, in place.

    A freshly built network has every BN at identity statistics, and timm zero-initialises the last BN of each
    residual branch, which would make the network degenerate: SE hidden from any output comparison, int8 ranges
    meaningless.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model
