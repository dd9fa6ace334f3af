"""torch.hub entry points: ``torch.hub.load(<repo dir>, "eca_resnet50", source="local")``.

Every zoo model is an entry; keyword arguments go to ``ecanet.create_model``. No weights are downloaded:
load your own with ``ecanet.load_checkpoint``.
"""

from functools import partial

from ecanet.models import create_model, list_models

dependencies = ["torch", "torchvision", "safetensors"]

for _name in list_models():
    _entry = partial(create_model, _name)
    _entry.__doc__ = f"Build {_name} (see ecanet.create_model)."
    globals()[_name] = _entry
