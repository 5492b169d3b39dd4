"""Box geometry and detection metrics: IoU, non-max suppression, precision/recall and (mean) AP.

Conventions used throughout the course:

* A box is ``(x_min, y_min, x_max, y_max)``: ``x`` grows to the right, ``y`` grows *down* (image
  rows), and the corners are continuous coordinates of pixel *edges*, so a box covering pixel
  columns ``3..7`` has ``x_min = 3`` and ``x_max = 8``. Its area is
  ``(x_max - x_min) * (y_max - y_min)``, with no "+1". Pixel units and normalised units (divided
  by the image size) both work, as long as the boxes that are compared use the same units.
* Detections are matched to ground truth greedily, in decreasing order of score: a detection is a
  true positive when its best IoU with a not-yet-matched ground-truth box of its image is at least
  the IoU threshold (COCO-style matching); otherwise it is a false positive.
* Average precision uses all-point interpolation (PASCAL VOC 2010 and later): the area under the
  precision/recall curve after each precision is replaced by the highest precision at any equal or
  higher recall. ``n_points=11`` gives VOC 2007's 11-point AP and ``n_points=101`` COCO's sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "iou",
    "pairwise_iou",
    "non_max_suppression",
    "match_detections",
    "precision_recall_curve",
    "average_precision",
    "average_precision_per_class",
    "mean_average_precision",
    "draw_boxes",
]


def _as_boxes(boxes: Any) -> np.ndarray:
    """Float64 array of boxes whose last axis has length 4."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1 and b.size == 0:
        b = b.reshape(0, 4)
    if b.shape[-1] != 4:
        raise ValueError(f"boxes must have a last axis of length 4, got shape {b.shape}")
    return b


def iou(boxes_a: Any, boxes_b: Any) -> np.ndarray:
    """IoU of boxes ``(x_min, y_min, x_max, y_max)``, broadcast over the leading axes of both."""
    a, b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    width = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def pairwise_iou(boxes_a: Any, boxes_b: Any) -> np.ndarray:
    """Matrix ``(N, M)`` of the IoU of each of N boxes with each of M boxes."""
    a, b = _as_boxes(boxes_a).reshape(-1, 4), _as_boxes(boxes_b).reshape(-1, 4)
    return iou(a[:, None, :], b[None, :, :])


def non_max_suppression(boxes: Any, scores: Any, iou_threshold: float = 0.5,
                        score_threshold: float = -np.inf,
                        max_output_size: int | None = None) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, by decreasing score (drops IoU > threshold)."""
    b = _as_boxes(boxes).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    order = order[s[order] > score_threshold]
    keep: list[int] = []
    while order.size and (max_output_size is None or len(keep) < max_output_size):
        best, order = order[0], order[1:]
        keep.append(int(best))
        order = order[iou(b[best], b[order]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def match_detections(pred_boxes: Sequence[Any], pred_scores: Sequence[Any],
                     true_boxes: Sequence[Any], iou_threshold: float = 0.5
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """Sorted scores and true-positive flags of the detections of all images, and #true boxes."""
    if not len(pred_boxes) == len(pred_scores) == len(true_boxes):
        raise ValueError("pred_boxes, pred_scores and true_boxes need one entry per image")
    image_ids, scores, boxes = [], [], []
    for i, (pb, ps) in enumerate(zip(pred_boxes, pred_scores)):
        pb, ps = _as_boxes(pb).reshape(-1, 4), np.asarray(ps, dtype=np.float64).reshape(-1)
        if len(pb) != len(ps):
            raise ValueError(f"image {i}: {len(pb)} boxes but {len(ps)} scores")
        image_ids.append(np.full(len(ps), i))
        scores.append(ps)
        boxes.append(pb)
    image_id = np.concatenate(image_ids) if image_ids else np.zeros(0, int)
    score = np.concatenate(scores) if scores else np.zeros(0)
    box = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    order = np.argsort(-score, kind="stable")
    gts = [_as_boxes(t).reshape(-1, 4) for t in true_boxes]
    matched = [np.zeros(len(g), dtype=bool) for g in gts]
    is_tp = np.zeros(len(order), dtype=bool)
    for rank, d in enumerate(order):
        gt, used = gts[image_id[d]], matched[image_id[d]]
        if not len(gt):
            continue
        overlaps = np.where(used, -1.0, iou(box[d], gt))
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            used[best] = True
            is_tp[rank] = True
    return score[order], is_tp, int(sum(len(g) for g in gts))


def precision_recall_curve(pred_boxes: Sequence[Any], pred_scores: Sequence[Any],
                           true_boxes: Sequence[Any], iou_threshold: float = 0.5
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and score threshold after each detection, best first (one class)."""
    scores, is_tp, n_true = match_detections(pred_boxes, pred_scores, true_boxes, iou_threshold)
    if n_true == 0:
        raise ValueError("recall is undefined without ground-truth boxes")
    tp = np.cumsum(is_tp)
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / n_true
    return precision, recall, scores


def average_precision(precision: Any, recall: Any, n_points: int | None = None) -> float:
    """AP: area under the interpolated PR curve (all points, or ``n_points`` recall levels)."""
    p = np.asarray(precision, dtype=np.float64).reshape(-1)
    r = np.asarray(recall, dtype=np.float64).reshape(-1)
    if p.shape != r.shape:
        raise ValueError(f"precision {p.shape} and recall {r.shape} differ in shape")
    if p.size == 0:
        return 0.0
    if np.any(np.diff(r) < 0):
        raise ValueError("recall must be non-decreasing (points sorted by decreasing score)")
    # interpolated precision: the best precision at this recall or any higher one
    p_interp = np.maximum.accumulate(p[::-1])[::-1]
    if n_points is None:
        steps = np.diff(np.concatenate([[0.0], r]))
        return float(np.sum(steps * p_interp))
    levels = np.linspace(0.0, 1.0, n_points)
    first = np.searchsorted(r, levels, side="left")  # first point reaching each recall level
    reached = first < len(r)
    return float(np.mean(np.where(reached, p_interp[np.minimum(first, len(r) - 1)], 0.0)))


def average_precision_per_class(pred_boxes: Sequence[Any], pred_scores: Sequence[Any],
                                pred_labels: Sequence[Any], true_boxes: Sequence[Any],
                                true_labels: Sequence[Any], iou_threshold: float = 0.5,
                                n_points: int | None = None) -> dict[int, float]:
    """AP of each class that has ground truth; detections match only boxes of their own class."""
    pl = [np.asarray(x).reshape(-1) for x in pred_labels]
    tl = [np.asarray(x).reshape(-1) for x in true_labels]
    classes = np.unique(np.concatenate(tl)) if tl else np.zeros(0, int)
    result: dict[int, float] = {}
    for c in classes:
        pb = [_as_boxes(b).reshape(-1, 4)[lab == c] for b, lab in zip(pred_boxes, pl)]
        ps = [np.asarray(s).reshape(-1)[lab == c] for s, lab in zip(pred_scores, pl)]
        tb = [_as_boxes(b).reshape(-1, 4)[lab == c] for b, lab in zip(true_boxes, tl)]
        precision, recall, _ = precision_recall_curve(pb, ps, tb, iou_threshold)
        result[int(c)] = average_precision(precision, recall, n_points)
    return result


def mean_average_precision(pred_boxes: Sequence[Any], pred_scores: Sequence[Any],
                           pred_labels: Sequence[Any], true_boxes: Sequence[Any],
                           true_labels: Sequence[Any], iou_threshold: float = 0.5,
                           n_points: int | None = None) -> float:
    """mAP: the mean over the classes present in the ground truth of their average precision."""
    per_class = average_precision_per_class(pred_boxes, pred_scores, pred_labels, true_boxes,
                                            true_labels, iou_threshold, n_points)
    if not per_class:
        raise ValueError("mAP is undefined without ground-truth boxes")
    return float(np.mean(list(per_class.values())))


def draw_boxes(ax: Any, boxes: Any, labels: Sequence[str] | None = None, color: str = "lime",
               linewidth: float = 1.5, linestyle: str = "-") -> None:
    """Draw boxes ``(x_min, y_min, x_max, y_max)`` in pixel units on an ``imshow`` axes."""
    from matplotlib.patches import Rectangle

    for k, (x0, y0, x1, y1) in enumerate(_as_boxes(boxes).reshape(-1, 4)):
        # imshow puts pixel (row, col) centred on (col, row): its edges are at -0.5 and +0.5
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                               edgecolor=color, linewidth=linewidth, linestyle=linestyle))
        if labels is not None:
            ax.text(x0 - 0.5, y0 - 1.0, labels[k], color=color, fontsize=8, va="bottom")
