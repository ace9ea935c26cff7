"""The equivalence check of a conversion: source and converted model on the same real photos
(``se_zoo.data.photo_batch``)."""
from typing import NamedTuple

import torch
import torch.nn as nn

__all__ = ['DEFAULT_TOLERANCE', 'LogitDifference', 'logit_difference']

# Largest logit difference accepted between source and converted model, as a fraction of the largest |logit|
# (at least 1): fp32 carries ~7 significant digits, and two implementations that order their sums differently
# (torchvision vs timm; se_zoo's fused SE-ResNet eval path) differ by a few ulps per layer.
DEFAULT_TOLERANCE = 1e-5


class LogitDifference(NamedTuple):
    """How a converted model's logits compare with its source's on the same images."""
    max_abs_diff: float
    max_abs_logit: float  # of the source, the scale the difference is judged against
    same_top1: bool

    def within(self, tolerance: float) -> bool:
        """Same top-1 everywhere and a difference of at most ``tolerance`` x max(1, largest |logit|)."""
        return self.same_top1 and self.max_abs_diff <= tolerance * max(1., self.max_abs_logit)


@torch.no_grad()
def logit_difference(source: nn.Module, converted: nn.Module, images: torch.Tensor) -> LogitDifference:
    """How far two models' logits on ``images`` are apart (fp32, eval mode), and whether every top-1 agrees."""
    source_logits = source.eval().float()(images)
    converted_logits = converted.eval().float()(images)
    return LogitDifference(
        (source_logits - converted_logits).abs().max().item(), source_logits.abs().max().item(),
        bool((source_logits.argmax(-1) == converted_logits.argmax(-1)).all()))

