"""se_zoo's model families; importing this package registers every entrypoint with timm."""
from .se_efficientnet import *
from .se_mobilenet import *
from .se_resnet import *
