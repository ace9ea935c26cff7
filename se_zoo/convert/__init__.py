"""Convert public SE checkpoints into se_zoo weights, and prove that the result computes what the source computed.

- ``sources``: what can be converted (``KNOWN_SOURCES``) and how a source is read or fetched;
- ``se_zoo.state_dicts``: the key mappings (shared with pretrained loading);
- ``equivalence``: source and converted model on the same real photos (``skimage.data``);
- ``card``: the model card that records the source, its licence and the measured difference;
- ``converter``: ``convert``, all or nothing: a checkpoint that does not map completely, or a converted model
  that does not compute what the source computes, writes nothing.
"""
from ..state_dicts import LAYOUTS, ConversionError, detect_layout, map_state_dict
from .converter import Conversion, convert
from .equivalence import DEFAULT_TOLERANCE, LogitDifference, logit_difference
from .sources import KNOWN_SOURCES, KnownSource, LoadedSource, SourceUnavailableError, load_source

__all__ = [
    'ConversionError', 'Conversion', 'KnownSource', 'LoadedSource', 'LogitDifference', 'SourceUnavailableError',
    'KNOWN_SOURCES', 'LAYOUTS', 'DEFAULT_TOLERANCE', 'convert', 'detect_layout', 'load_source', 'map_state_dict',
    'logit_difference',
]
