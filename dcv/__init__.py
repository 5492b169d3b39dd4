"""dcv: the helper package of the course *Deep Computer Vision with CNNs*.

Modules: ``data`` (datasets from verified sources), ``pretrained`` (offline ImageNet models),
``memory`` (parameter and memory maths of conv nets), ``plots`` (figures and block diagrams used by
the book), ``style`` (neural style transfer), and the chapters' other helpers.
"""

__version__ = "0.1.0"
