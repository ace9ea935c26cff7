"""The weights layer, below the models: which file each ``arch.tag`` is, fetching it, verifying it, pinning it.

- ``se_zoo.weights.manifest``: the weights manifest (``weights/manifest.json``) as typed ``WeightEntry`` values, and
  the timm pretrained cfgs made from them; upstream entries read their location and preprocessing from timm's cfg.
- ``se_zoo.weights.fetch``: downloads a weight file through ``huggingface_hub`` (or torch.hub, for a release URL)
  and verifies it before anything loads it. The model families call it.
- ``se_zoo.weights.pin``: records the digest (and commit) of entries, for ``se-zoo weights pin``.

Publishing, which needs the models, is ``se_zoo.hub.publish``, above them.
"""
