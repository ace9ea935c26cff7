"""The Hugging Face Hub side of se_zoo, above the models: ``se_zoo.hub.publish`` writes publish-ready folders and
uploads them, recording the weight in the manifest. Fetching and verifying weights is ``se_zoo.weights``, below the
models."""
