"""How ``precision='auto'`` chooses: every candidate precision is checked against fp32, timed against it on this
machine, and the fastest one whose accuracy holds becomes the default.

Accuracy holds:

- on labelled data (``evaluate=``): if the precision's top-1 is at most ``MAX_ACCURACY_LOSS`` (0.5) points below
  fp32's on the same images;
- without labels: if at least ``MIN_AGREEMENT`` (99%) of the check images keep fp32's top-1 class and have every
  logit within ``CHECK_TOLERANCE[precision] * max(1, max|fp32 logit|)`` of fp32's (bf16 0.05, int8 0.25).

A precision is only chosen if it is faster than fp32 at every batch size asked for (the median of interleaved
per-round ratios above 1), so the default is never slower than the export's own fp32 file; among those, the
highest geometric-mean speed-up wins.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .timing import Timer, median_ratio

__all__ = [
    'AUTO_ROUNDS', 'CHECK_TOLERANCE', 'DEFAULT_CHECK_SAMPLES', 'MAX_ACCURACY_LOSS', 'MIN_AGREEMENT', 'Candidate',
    'accuracy_on', 'agreement_on', 'choose', 'time_candidates']

MAX_ACCURACY_LOSS = 0.5
MIN_AGREEMENT = 0.99
# Relative to max(1, max|fp32 logit|) of each image. bf16 rounds every product to 8 significant bits; int8's
# quantization steps are coarser still.
CHECK_TOLERANCE = {'bf16': 0.05, 'int8': 0.25}
DEFAULT_CHECK_SAMPLES = 256
AUTO_ROUNDS = 7
_CHUNK = 64
_EVAL_BATCH = 256


@dataclass
class Candidate:
    """One precision under consideration and what was measured of it (``record()`` is what deploy.json keeps)."""
    precision: str
    runner: Callable[[np.ndarray], np.ndarray]
    ms: Dict[int, float] = field(default_factory=dict)  # batch size -> median ms per batch
    speedup: Dict[int, float] = field(default_factory=dict)  # batch size -> median per-round ratio fp32 / this
    accuracy: Optional[float] = None  # top-1 percent on labelled data
    top1_agreement: Optional[float] = None  # share of check images whose top-1 is fp32's
    within_tolerance: Optional[float] = None  # share of check images that keep fp32's top-1 and logits
    max_abs_logit_diff: Optional[float] = None  # against fp32, over the check images
    holds: Optional[bool] = None
    reason: str = ''

    def record(self) -> Dict[str, Any]:
        values = dict(
            ms_per_batch={str(b): round(v, 3) for b, v in self.ms.items()},
            speedup_over_fp32={str(b): round(v, 3) for b, v in self.speedup.items()},
            accuracy=self.accuracy, top1_agreement=self.top1_agreement, within_tolerance=self.within_tolerance,
            max_abs_logit_diff=self.max_abs_logit_diff, accuracy_holds=self.holds, reason=self.reason)
        return {k: v for k, v in values.items() if v not in (None, {}, '')}


def _logits(runner, images: np.ndarray) -> np.ndarray:
    return np.concatenate([runner(np.ascontiguousarray(images[i:i + _CHUNK])) for i in range(0, len(images), _CHUNK)])


def accuracy_on(candidates: Dict[str, Candidate], dataset, transform: Callable, image_mode: str,
                progress: bool = False) -> Dict[str, float]:
    """Top-1 percent of every candidate on the labelled ``dataset``, each image preprocessed once for all."""
    from tqdm import tqdm
    correct = {p: 0 for p in candidates}
    seen = 0
    with tqdm(total=len(dataset), desc='evaluating', unit='img', disable=not progress) as bar:
        for start in range(0, len(dataset), _EVAL_BATCH):
            items = [dataset[i] for i in range(start, min(start + _EVAL_BATCH, len(dataset)))]
            batch = torch.stack([transform(image.convert(image_mode)) for image, _ in items]).numpy()
            labels = np.array([label for _, label in items])
            for precision, candidate in candidates.items():
                correct[precision] += int((_logits(candidate.runner, batch).argmax(1) == labels).sum())
            seen += len(labels)
            bar.update(len(labels))
    accuracy = {p: 100.0 * correct[p] / seen for p in candidates}
    for precision, candidate in candidates.items():
        candidate.accuracy = accuracy[precision]
    return accuracy


def agreement_on(candidates: Dict[str, Candidate], images: np.ndarray) -> None:
    """Compare every candidate's logits with fp32's on the preprocessed ``images``, per image."""
    reference = _logits(candidates['fp32'].runner, images)
    scale = np.maximum(1.0, np.abs(reference).max(axis=1))
    for precision, candidate in candidates.items():
        if precision == 'fp32':
            continue
        logits = _logits(candidate.runner, images)
        same_top1 = logits.argmax(1) == reference.argmax(1)
        diff = np.abs(logits - reference).max(axis=1)
        candidate.top1_agreement = float(same_top1.mean())
        candidate.within_tolerance = float((same_top1 & (diff <= CHECK_TOLERANCE[precision] * scale)).mean())
        candidate.max_abs_logit_diff = float(diff.max())


def time_candidates(candidates: Dict[str, Candidate], batch_sizes: Sequence[int], images: np.ndarray,
                    timer: Timer) -> None:
    """Time every candidate at each batch size (``images`` repeated to fill the batch), interleaved by ``timer``."""
    for batch_size in batch_sizes:
        x = np.ascontiguousarray(images[np.arange(batch_size) % len(images)])
        samples = timer({p: (lambda run=c.runner: run(x)) for p, c in candidates.items()})
        for precision, candidate in candidates.items():
            candidate.ms[batch_size] = 1e3 * float(np.median(samples[precision]))
            candidate.speedup[batch_size] = median_ratio(samples['fp32'], samples[precision])


def choose(candidates: Dict[str, Candidate], labelled: bool) -> Tuple[str, str]:
    """The fastest candidate whose accuracy holds and that beats fp32 at every timed batch size; and the rule."""
    fp32 = candidates['fp32']
    fp32.holds = True
    best, best_score = 'fp32', 1.0
    for precision, candidate in candidates.items():
        if precision == 'fp32':
            continue
        if labelled:
            candidate.holds = candidate.accuracy >= fp32.accuracy - MAX_ACCURACY_LOSS
            if not candidate.holds:
                candidate.reason = f'top-1 {candidate.accuracy - fp32.accuracy:+.2f} points against fp32'
        else:
            candidate.holds = candidate.within_tolerance >= MIN_AGREEMENT
            if not candidate.holds:
                candidate.reason = (f'{100 * candidate.within_tolerance:.1f}% of the check images keep fp32\'s top-1 '
                                    f'and logits (needs {100 * MIN_AGREEMENT:.0f}%)')
        slower = [b for b, s in candidate.speedup.items() if not s > 1.0]
        if candidate.holds and slower:
            candidate.reason = f'not faster than fp32 at batch {", ".join(map(str, slower))}'
        score = math.exp(sum(math.log(s) for s in candidate.speedup.values()) / max(1, len(candidate.speedup)))
        if candidate.holds and not slower and score > best_score:
            best, best_score = precision, score
    if labelled:
        rule = (f'fastest precision faster than fp32 at every batch size whose top-1 is within '
                f'{MAX_ACCURACY_LOSS} points of fp32')
    else:
        rule = (f'fastest precision faster than fp32 at every batch size for which >= {100 * MIN_AGREEMENT:.0f}% of '
                f"the check images keep fp32's top-1 and logits (tolerance {CHECK_TOLERANCE} x max(1, max|logit|))")
    return best, rule
