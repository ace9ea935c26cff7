"""Interleaved timing: how ``precision='auto'`` compares precisions, and what benchmarks/measure.py builds on.

A shared machine's load comes and goes; implementations timed one after the other each meet a different load.
Run in rounds instead, every implementation once per round in an order that rotates between rounds, the load
hits them all alike, and the median of the per-round ratios is a fair comparison even where absolute times move.
"""
import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ['Timer', 'interleaved', 'median_ratio', 'ratio_quartiles']

# A timer takes named zero-argument calls and returns the seconds per call of each, one sample per round.
Timer = Callable[[Dict[str, Callable[[], object]]], Dict[str, List[float]]]


def interleaved(
        fns: Dict[str, Callable[[], object]],
        rounds: int = 7,
        *,
        min_sample_s: float = 0.05,
        warmup: int = 2,
        pause_s: float = 0.05,
        sync: Optional[Callable[[], None]] = None,
) -> Dict[str, List[float]]:
    """Seconds per call of each fn: one sample per fn per round (A B A B ..., the order rotating by round).

    Args:
        fns: name -> a call to time.
        rounds: samples per fn.
        min_sample_s: a sample repeats the call until it lasts at least this long (a fast call timed once is
            mostly timer and scheduler noise).
        warmup: untimed calls of each fn first (first-call allocations, JIT or kernel selection).
        pause_s: sleep before each sample. ONNX Runtime's and OpenVINO's worker threads spin for several ms after
            their work; without the pause that spinning slows whatever is timed next.
        sync: called before a sample starts and before it stops (``torch.cuda.synchronize`` on a GPU).
    """
    sync = sync or (lambda: None)
    names = list(fns)
    reps = {}
    for name in names:
        for _ in range(warmup):
            fns[name]()
        sync()
        start = time.perf_counter()
        fns[name]()
        sync()
        reps[name] = max(1, math.ceil(min_sample_s / max(time.perf_counter() - start, 1e-6)))
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if pause_s:
                time.sleep(pause_s)
            sync()
            start = time.perf_counter()
            for _ in range(reps[name]):
                fns[name]()
            sync()
            samples[name].append((time.perf_counter() - start) / reps[name])
    return samples


def median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """The median of the per-round ratios num / den (> 1: den is faster)."""
    return statistics.median(a / b for a, b in zip(num, den))


def ratio_quartiles(num: Sequence[float], den: Sequence[float]) -> Tuple[float, float, float]:
    """Median and interquartile range of the per-round ratios num / den: how far apart rounds can be here."""
    values = sorted(a / b for a, b in zip(num, den))
    if len(values) < 4:
        return statistics.median(values), values[0], values[-1]
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return statistics.median(values), q1, q3
