"""An Orange learner as a scikit-learn classifier, so that comparing can score with it.

Compare Backbones takes any Orange learner (Neural Network, kNN, ...) on its
``Learner`` input; :func:`~orangecontrib.transferembed.comparison.compare` takes
a scikit-learn estimator. :class:`OrangeLearnerClassifier` joins the two: it makes
an Orange table of the features ``n0..nK`` and the class, trains the learner on
it, and predicts the classes' probabilities with the learner's model.
"""

from __future__ import annotations

import numpy as np
from Orange.base import Learner
from Orange.data import ContinuousVariable, DiscreteVariable, Domain, Table
from sklearn.base import BaseEstimator, ClassifierMixin

from orangecontrib.transferembed.comparison import scorer_name


class OrangeLearnerClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier that trains ``learner`` (an Orange learner)."""

    def __init__(self, learner: Learner | None = None):
        self.learner = learner

    def __sklearn_clone__(self) -> OrangeLearnerClassifier:
        """A new classifier on the same learner: an Orange learner keeps nothing between
        fits, and some (the kNN widget's fitter) have a ``get_params`` of their own that
        scikit-learn's default cloning would call with arguments it does not take."""
        return type(self)(self.learner)

    @property
    def name(self) -> str:
        """The learner's name, which the scores show (``kNN``, ``Neural Network``)."""
        return scorer_name(self.learner)

    def fit(self, X, y) -> OrangeLearnerClassifier:
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        features = [ContinuousVariable(f"n{i}") for i in range(np.shape(X)[1])]
        self.domain_ = Domain(features, DiscreteVariable(
            "Class", values=[str(value) for value in self.classes_]))
        table = Table.from_numpy(self.domain_, np.asarray(X, float), codes.astype(float))
        self.model_ = self.learner(table)
        return self

    def predict_proba(self, X) -> np.ndarray:
        table = Table.from_numpy(self.domain_, np.asarray(X, float),
                                 np.full(len(X), np.nan))
        return np.asarray(self.model_(table, self.model_.Probs), float)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def why_not_a_classifier(learner: Learner) -> str | None:
    """Why ``learner`` cannot learn classes from features (a regression learner, say),
    in its own words; None if it can."""
    domain = Domain([ContinuousVariable("n0")], DiscreteVariable("Class", values=("a", "b")))
    return learner.incompatibility_reason(domain)
