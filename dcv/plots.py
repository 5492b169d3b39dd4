"""Shared figures of the course: grids of images, feature maps, convolution filters, block diagrams."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["show_images", "show_feature_maps", "show_filters", "block_diagram"]


def _grid(n: int, ncols: int, size: float, aspect: float = 1.0) -> tuple[Figure, np.ndarray]:
    """A figure of ``n`` visible axes (``size`` wide, ``aspect * size`` high) in rows of ``ncols``."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    figsize = (size * ncols, (size * aspect + 0.4) * nrows + 0.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]


def _as_image(image: Any) -> np.ndarray:
    """An array imshow can draw: (h, w) or (h, w, 3|4); a trailing single channel is dropped."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"an image must be (h, w) or (h, w, channels), got shape {array.shape}")
    return array


def show_images(images: Sequence[Any], titles: Sequence[str] | None = None, cmap: str | None = None,
                ncols: int = 4, suptitle: str = "Images", size: float = 3.0, **imshow: Any) -> Figure:
    """Draw images side by side (axes off), each with its title; return the Figure."""
    images = [_as_image(im) for im in images]
    if not images:
        raise ValueError("nothing to show: got 0 images")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    fig, axes = _grid(len(images), ncols, size, aspect=max(im.shape[0] / im.shape[1] for im in images))
    for i, (ax, image) in enumerate(zip(axes, images)):
        ax.imshow(image, cmap=cmap if image.ndim == 2 else None, **imshow)
        ax.set_title(titles[i] if titles is not None else f"image {i}")
        ax.axis("off")
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_feature_maps(maps: Any, titles: Sequence[str] | None = None, ncols: int = 4,
                      suptitle: str = "Feature maps", cmap: str = "gray", size: float = 3.0) -> Figure:
    """Draw each channel of an (h, w, maps) array (or a batch of one) as a gray image; return the Figure."""
    array = np.asarray(maps)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"maps must be (h, w, maps) or (1, h, w, maps), got shape {np.shape(maps)}")
    channels = [array[..., k] for k in range(array.shape[-1])]
    titles = titles if titles is not None else [f"map {k}" for k in range(len(channels))]
    return show_images(channels, titles, cmap=cmap, ncols=ncols, suptitle=suptitle, size=size)


def show_filters(kernel: Any, in_channel: int = 0, titles: Sequence[str] | None = None, ncols: int = 8,
                 suptitle: str = "Filters", size: float = 1.6) -> Figure:
    """Draw the weights of a (kh, kw, in_channels, filters) kernel for one input channel; return the Figure.

    Weights share one colour scale, symmetric around 0 (black negative, grey 0, white positive).
    """
    array = np.asarray(kernel)
    if array.ndim != 4:
        raise ValueError(f"kernel must be (kh, kw, in_channels, filters), got shape {array.shape}")
    weights = array[:, :, in_channel, :]
    limit = float(np.abs(weights).max()) or 1.0
    titles = titles if titles is not None else [f"filter {k}" for k in range(weights.shape[-1])]
    return show_images([weights[..., k] for k in range(weights.shape[-1])], titles, cmap="gray",
                       ncols=ncols, suptitle=suptitle, size=size, vmin=-limit, vmax=limit,
                       interpolation="nearest")


def block_diagram(model: Any, show_shapes: bool = True, rankdir: str = "TB", dpi: int = 60) -> bytes:
    """PNG bytes of a Keras model's layer graph, drawn by ``keras.utils.plot_model`` with Graphviz."""
    import keras

    if shutil.which("dot") is None:
        raise RuntimeError("block_diagram needs Graphviz's `dot` program: install the Debian package "
                           "graphviz (bash scripts/setup.sh does it, as root)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.png"
        keras.utils.plot_model(model, to_file=str(path), show_shapes=show_shapes,
                               show_layer_names=True, rankdir=rankdir, dpi=dpi)
        return path.read_bytes()
