"""Unit tests of dcv.detection: IoU, non-max suppression, precision/recall, AP and mAP."""

import os

import numpy as np
import pytest

from dcv import detection as det

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def random_boxes(rng: np.random.Generator, n: int, size: float = 100.0) -> np.ndarray:
    """Random valid boxes (x_min, y_min, x_max, y_max) inside a size x size image."""
    corners = rng.uniform(0, size, (n, 2, 2))
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)


def test_iou_hand_computed():
    """Is the IoU of two 2x2 squares overlapping on a 1x2 strip equal to 2 / (4 + 4 - 2)?"""
    assert det.iou([0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(2 / 6)


def test_iou_identical_disjoint_touching_nested():
    """Is IoU 1 for a box with itself, 0 when disjoint or only touching, area ratio when nested?"""
    a = np.array([10, 20, 30, 60])
    assert det.iou(a, a) == pytest.approx(1.0)
    assert det.iou(a, [40, 20, 50, 60]) == 0.0
    assert det.iou(a, [30, 20, 50, 60]) == 0.0
    assert det.iou(a, [15, 30, 25, 40]) == pytest.approx(100 / 800)


def test_iou_degenerate_boxes_give_zero_not_nan():
    """Does the IoU of two empty boxes come out as 0 rather than NaN?"""
    assert det.iou([5, 5, 5, 5], [5, 5, 5, 5]) == 0.0


def test_iou_broadcasts_and_is_symmetric():
    """Does iou broadcast over leading axes, and is it symmetric?"""
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    m = det.iou(a[:, None], b[None])
    assert m.shape == (7, 5)
    np.testing.assert_allclose(m, det.pairwise_iou(a, b))
    np.testing.assert_allclose(m, det.pairwise_iou(b, a).T)
    np.testing.assert_allclose(det.iou(a[:5], b), np.diag(m[:5]))  # aligned pairs
    assert ((m >= 0) & (m <= 1)).all()


def test_iou_matches_keras_compute_iou():
    """Does pairwise_iou agree with keras.utils.bounding_boxes.compute_iou in "xyxy" format?"""
    import keras

    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 20), random_boxes(rng, 30)
    expected = keras.ops.convert_to_numpy(
        keras.utils.bounding_boxes.compute_iou(a.astype("float32"), b.astype("float32"), "xyxy"))
    np.testing.assert_allclose(det.pairwise_iou(a, b), expected, atol=1e-5)


def test_nms_hand_example():
    """Are two heavily overlapping boxes reduced to the higher-scored one, a distant box kept?"""
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]
    keep = det.non_max_suppression(boxes, [0.8, 0.9, 0.7], iou_threshold=0.5)
    assert keep.tolist() == [1, 2]


def test_nms_threshold_is_strict_and_score_threshold_filters():
    """Is a box with IoU exactly at the threshold kept, and a score at the score threshold dropped?"""
    boxes = [[0, 0, 2, 2], [1, 0, 3, 2]]  # IoU 1/3
    assert det.non_max_suppression(boxes, [0.9, 0.8], iou_threshold=1 / 3).tolist() == [0, 1]
    assert det.non_max_suppression(boxes, [0.9, 0.8], iou_threshold=0.3).tolist() == [0]
    assert det.non_max_suppression(boxes, [0.9, 0.8], 1 / 3, score_threshold=0.8).tolist() == [0]
    assert det.non_max_suppression(np.zeros((0, 4)), []).tolist() == []


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_tensorflow(seed):
    """Does non_max_suppression keep the same boxes, in the same order, as tf.image's?"""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, 200), rng.uniform(size=200)
    for iou_threshold, score_threshold, max_out in [(0.5, 0.0, 200), (0.3, 0.4, 200), (0.7, 0.2, 10)]:
        ours = det.non_max_suppression(boxes, scores, iou_threshold, score_threshold, max_out)
        # TensorFlow wants (y_min, x_min, y_max, x_max); IoU does not care, but swap anyway
        theirs = tf.image.non_max_suppression(
            boxes[:, [1, 0, 3, 2]].astype("float32"), scores.astype("float32"), max_out,
            iou_threshold, score_threshold).numpy()
        assert ours.tolist() == theirs.tolist()


def test_precision_recall_hand_example():
    """With 2 true boxes and detections TP, FP, TP by score, are P = 1, 1/2, 2/3 and R = 1/2, 1/2, 1?"""
    true = [np.array([[0, 0, 10, 10]]), np.array([[20, 20, 30, 30]])]
    pred = [np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([[21, 21, 31, 31]])]
    scores = [np.array([0.9, 0.8]), np.array([0.7])]
    precision, recall, thresholds = det.precision_recall_curve(pred, scores, true, 0.5)
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3])
    np.testing.assert_allclose(recall, [1 / 2, 1 / 2, 1])
    np.testing.assert_allclose(thresholds, [0.9, 0.8, 0.7])
    assert det.average_precision(precision, recall) == pytest.approx(1 / 2 * 1 + 1 / 2 * 2 / 3)


def test_duplicate_detection_is_a_false_positive():
    """Is a second detection of an already matched object counted as a false positive?"""
    true = [np.array([[0, 0, 10, 10]])]
    pred = [np.array([[0, 0, 10, 10], [0, 0, 10, 9]])]
    scores, is_tp, n_true = det.match_detections(pred, [np.array([0.5, 0.9])], true)
    assert scores.tolist() == [0.9, 0.5] and is_tp.tolist() == [True, False] and n_true == 1


def test_iou_threshold_is_inclusive():
    """Does a detection whose IoU equals the threshold count as a true positive?"""
    true = [np.array([[0, 0, 2, 2]])]
    pred = [np.array([[1, 0, 3, 2]])]  # IoU 1/3
    assert det.match_detections(pred, [[1.0]], true, 1 / 3)[1].tolist() == [True]
    assert det.match_detections(pred, [[1.0]], true, 0.34)[1].tolist() == [False]


def test_average_precision_interpolations():
    """Do all-point, 11-point and 101-point AP give the hand-computed values?"""
    precision, recall = [1.0, 0.5, 2 / 3], [0.5, 0.5, 1.0]
    assert det.average_precision(precision, recall) == pytest.approx(5 / 6)
    # recall levels 0, .1, ..., .5 reach precision 1; .6, ..., 1 reach 2/3
    assert det.average_precision(precision, recall, 11) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert det.average_precision(precision, recall, 101) == pytest.approx((51 + 50 * 2 / 3) / 101)
    # a detector that never reaches full recall: the missing recall counts as precision 0
    assert det.average_precision([1.0, 0.5], [0.25, 0.25]) == pytest.approx(0.25)
    assert det.average_precision([], []) == 0.0


def test_perfect_and_empty_detectors():
    """Is AP 1 for perfect detections and 0 when nothing is detected?"""
    true = [np.array([[0, 0, 5, 5], [10, 10, 20, 20]]), np.zeros((0, 4))]
    p, r, _ = det.precision_recall_curve(true, [np.array([0.9, 0.8]), np.zeros(0)], true)
    assert det.average_precision(p, r) == 1.0
    p, r, _ = det.precision_recall_curve([np.zeros((0, 4))] * 2, [np.zeros(0)] * 2, true)
    assert det.average_precision(p, r) == 0.0


def test_mean_average_precision_matches_classes():
    """Does a box with the wrong class miss, and is mAP the mean of the per-class APs?"""
    true_boxes = [np.array([[0, 0, 10, 10], [20, 0, 30, 10]])]
    true_labels = [np.array([3, 7])]
    pred_boxes = [np.array([[0, 0, 10, 10], [20, 0, 30, 10]])]
    per_class = det.average_precision_per_class(pred_boxes, [np.array([0.9, 0.8])],
                                                [np.array([3, 5])], true_boxes, true_labels)
    assert per_class == {3: 1.0, 7: 0.0}
    assert det.mean_average_precision(pred_boxes, [np.array([0.9, 0.8])], [np.array([3, 5])],
                                      true_boxes, true_labels) == pytest.approx(0.5)


def test_bad_inputs_raise():
    """Are mismatched lengths, unsorted recall and missing ground truth reported as errors?"""
    with pytest.raises(ValueError):
        det.non_max_suppression([[0, 0, 1, 1]], [0.5, 0.6])
    with pytest.raises(ValueError):
        det.average_precision([1.0, 1.0], [0.5, 0.2])
    with pytest.raises(ValueError):
        det.precision_recall_curve([np.zeros((0, 4))], [np.zeros(0)], [np.zeros((0, 4))])
    with pytest.raises(ValueError):
        det.iou([0, 0, 1], [0, 0, 1, 1])
