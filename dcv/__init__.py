"""dcv: the helper package of the course *Deep Computer Vision with CNNs*.

Modules:

- ``sources``: the one loader of verified files (cache, official source, registry package, SHA-256);
- ``data``: MNIST and Fashion-MNIST, identical to Keras' loaders, offline too; images scaled to [0, 1];
- ``images``: image files in one folder per class, and TF's flower photos;
- ``pretrained``: EfficientNet-Lite0 with ImageNet weights, offline, and the ImageNet class names;
- ``architectures``: the chapter-4 networks (LeNet-5 to ResNet) and their building blocks;
- ``memory``: output sizes, parameters and bytes of convolutional stacks;
- ``receptive``: receptive fields of stacked layers;
- ``detection``: IoU, non-max suppression, precision/recall and mAP;
- ``segmentation``: the nuclei image, transposed-convolution sizes, segmentation metrics;
- ``synthetic``: data sets the course generates (digits on canvases, scenes);
- ``style``: neural style transfer (Gram matrices, losses, the optimisation loop);
- ``training``: training exercise 9's CNN fast on any device (configuration, augmentation, timing);
- ``grader``: the graders' checks (answers compared without being fooled; a handed-in model loaded
  safely, from scratch, scored);
- ``plots``: figures and block diagrams shared by the book.
"""

__version__ = "0.1.0"
