"""Real features: pretrained MobileNet 0.25 separates ants from bees; random weights do not."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from orangecontrib.transferembed import embed, folder_source

PER_CLASS = 30  # per class and split: 120 photos in all


def _photos(hymenoptera):
    """The first PER_CLASS ants and bees of train and of val, as one source."""
    picks = []
    for split in ("train", "val"):
        source = folder_source(hymenoptera / split)
        for label in ("ants", "bees"):
            picks += [source.paths[i] for i in np.flatnonzero(source.labels == label)
                      [:PER_CLASS]]
    labels = ["bees" if "/bees/" in p.replace("\\", "/") else "ants" for p in picks]
    return picks, labels


def _cv_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(model, features, labels, cv=folds).mean())


def test_pretrained_features_beat_random_ones(hymenoptera, mobilenet_keras_home):
    paths, labels = _photos(hymenoptera)
    common = {"model": "MobileNet", "alpha": 0.25, "cache": False}  # 224x224, as users run it
    real = embed(paths, labels=labels, weights="imagenet", **common)
    random = embed(paths, labels=labels, weights=None, **common)
    assert not real.skipped and not random.skipped  # the palette image too
    y = np.asarray(real.labels)
    real_acc = _cv_accuracy(real.embeddings, y)
    random_acc = _cv_accuracy(random.embeddings, y)
    print(f"ants/bees 5-fold accuracy: pretrained {real_acc:.3f}, random {random_acc:.3f}")
    assert real_acc >= 0.8
    assert real_acc - random_acc >= 0.15
