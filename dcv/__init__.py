"""dcv: the helper package of the course *Deep Computer Vision with CNNs*.

Modules: ``data`` (datasets from verified sources), ``pretrained`` (offline ImageNet models),
``memory`` (parameter and memory maths of conv nets), ``plots`` (figures used by the book),
``images`` (image files in class folders; TF's flower photos, verified).
"""

__version__ = "0.1.0"
