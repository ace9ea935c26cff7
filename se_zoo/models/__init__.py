"""se_zoo's model families; importing this package registers every entrypoint with timm."""
from ._factory import check_model_name, close_model_names, list_models, load_model
from ._pretrained import reload_manifest
from .se_efficientnet import *
from .se_mobilenet import *
from .se_resnet import *
