"""The Hugging Face Hub side of se_zoo, in three layers that import downwards only.

- ``se_zoo.hub.manifest``: the weights manifest (``weights/manifest.json``), pure data: which file of which Hub
  repo each ``arch.tag`` is, how it is pinned, and the timm pretrained cfgs made from it.
- ``se_zoo.hub.fetch``: downloads a weight file through ``huggingface_hub`` and verifies it before anything
  loads it. The model families call it.
- ``se_zoo.hub.publish``: writes publish-ready folders and uploads them; it sits above the models.
"""
