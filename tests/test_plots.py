"""Smoke tests of dcv.plots with the Agg backend."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from dcv import plots
from dcv.plots import block_diagram, show_feature_maps, show_filters, show_images


def _visible_axes(fig):
    """The axes a reader sees."""
    return [ax for ax in fig.axes if ax.get_visible()]


def test_show_images_titles_and_axes_off():
    """Does show_images draw one titled, axis-free panel per image under a figure title?"""
    images = [np.zeros((4, 5)), np.ones((4, 5, 3)), np.zeros((4, 5, 1))]
    fig = show_images(images, titles=["a", "b", "c"], cmap="gray", ncols=2, suptitle="Three")
    assert isinstance(fig, Figure)
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["a", "b", "c"]
    assert not any(ax.axison for ax in axes)
    assert fig._suptitle.get_text() == "Three"
    plt.close(fig)


def test_show_feature_maps_one_panel_per_map():
    """Does show_feature_maps draw each channel of a batch of one?"""
    fig = show_feature_maps(np.random.default_rng(0).normal(size=(1, 6, 6, 5)), ncols=3)
    assert len(_visible_axes(fig)) == 5
    assert _visible_axes(fig)[4].get_title() == "map 4"
    plt.close(fig)


def test_show_filters_symmetric_scale():
    """Does show_filters draw every filter on one colour scale centred on 0?"""
    kernel = np.zeros((3, 3, 2, 4))
    kernel[1, 1, 0, 2] = -2.0
    fig = show_filters(kernel)
    axes = _visible_axes(fig)
    assert len(axes) == 4
    assert axes[0].images[0].get_clim() == (-2.0, 2.0)
    plt.close(fig)


def test_bad_shapes_raise():
    """Do the helpers refuse arrays of the wrong shape or mismatched titles?"""
    with pytest.raises(ValueError, match="titles"):
        show_images([np.zeros((2, 2))], titles=["a", "b"])
    with pytest.raises(ValueError, match="maps must be"):
        show_feature_maps(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="kernel must be"):
        show_filters(np.zeros((3, 3, 2)))
    with pytest.raises(ValueError, match="0 images"):
        show_images([])


def test_block_diagram_is_a_png_of_the_model(monkeypatch):
    """Does block_diagram return a PNG image, and say in one line what is missing without Graphviz?"""
    import keras

    inputs = keras.Input((8, 8, 3), name="image")
    outputs = keras.layers.Add(name="skip")([keras.layers.Conv2D(3, 3, padding="same")(inputs), inputs])
    model = keras.Model(inputs, outputs)
    png = block_diagram(model)  # Graphviz is installed by scripts/setup.sh (scripts/apt/diagrams.txt)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="graphviz"):
        block_diagram(model)
