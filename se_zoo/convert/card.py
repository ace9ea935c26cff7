"""The model card of a converted weight: where it comes from, its licence, and how closely it matches."""
from typing import Any, Dict, Optional

import torch

from ..data import PHOTO_NAMES
from .equivalence import LogitDifference
from .sources import LoadedSource

__all__ = ['conversion_card']


def conversion_card(loaded: LoadedSource, arch: str, measured: Optional[LogitDifference],
                    images: Optional[torch.Tensor], license: str) -> Dict[str, Any]:
    """The ``model_card`` metadata (see ``se_zoo.hub.publish.save_folder``) of the conversion of ``loaded``."""
    known = loaded.known
    if measured is None:
        check = (f'The equivalence was not measured at conversion time: {known.library} is not an installable '
                 f'package, so its architecture cannot be built here. se_zoo\'s tests check this mapping against '
                 f'a reference implementation of {known.library} {known.model}.')
    else:
        n, _, h, w = images.shape
        check = (f'On {n} real photos (skimage.data: {", ".join(PHOTO_NAMES)}; {h}x{w}, fp32) the converted '
                 f'model\'s logits differ from the source model\'s by at most **{measured.max_abs_diff:.3g}** '
                 f'(max abs; the largest |logit| is {measured.max_abs_logit:.3g}), with identical top-1 predictions.')
    top1 = (f' The source\'s published ImageNet-1k top-1 ({known.library} metadata): {loaded.top1}%.'
            if loaded.top1 is not None else '')
    args = ', '.join(f'`{k}={v!r}`' for k, v in known.target_kwargs.items())
    return {
        'source': f'{loaded.description}, {known.origin_url}',
        'description': (
            f'se_zoo `{arch}`{" (built with " + args + ")" if args else ""} carrying the weights of '
            f'{loaded.description}, converted by `se-zoo convert`.{top1}\n\n{check}'),
        'license': license,
    }
