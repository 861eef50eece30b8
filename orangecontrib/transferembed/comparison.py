"""Comparing representations: embed with several backbones and layers, and score each.

Each candidate (a backbone, or ``BACKBONE:LAYER``) is embedded once, through
the cache, and scored by stratified K-fold cross-validation with a fixed seed,
of a clone of the scikit-learn estimator given (by default a standardised
logistic regression): classification accuracy (CA), the area under the ROC
curve (AUC; one against the rest, averaged over the classes for more than two;
none for an estimator that gives neither probabilities nor decision values)
and F1 (weighted by class size), each the mean over the folds.
A candidate that cannot be embedded (its weights missing offline, an unknown
layer) becomes a row with the reason; the others still run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .config import DEFAULT_LAYER, EmbedConfig
from .errors import SettingsError, TransferEmbedError
from .jobs import check, run_job
from .models.registry import get_backbone
from .pipeline.engine import Hooks
from .pipeline.results import EmbeddingResult
from .pipeline.sources import Source
from .writers import label_texts

DEFAULT_FOLDS = 5
SEED = 0
#: Who scores when no estimator is given.
DEFAULT_SCORER = "logistic regression"


@dataclass(frozen=True)
class Candidate:
    """One representation: a backbone and one of its layers."""

    model: str
    layer: str = DEFAULT_LAYER

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """``BACKBONE`` or ``BACKBONE:LAYER``."""
        model, _, layer = text.strip().partition(":")
        if not model:
            raise SettingsError(f"a candidate needs a backbone, got {text!r}")
        return cls(model.strip(), layer.strip() or DEFAULT_LAYER)

    @property
    def label(self) -> str:
        return self.model if self.layer == DEFAULT_LAYER else f"{self.model}:{self.layer}"


@dataclass
class Score:
    """How well one candidate's embeddings separate the classes."""

    candidate: Candidate
    features: int | None = None
    ca: float | None = None
    auc: float | None = None
    f1: float | None = None
    ca_folds: list[float] = field(default_factory=list)
    seconds: float = 0.0  #: time to embed (short when served from the cache)
    error: str | None = None  #: why it has no scores
    result: EmbeddingResult | None = None
    scorer: str = DEFAULT_SCORER  #: the estimator that scored, in a few words

    @property
    def spread(self) -> float | None:
        return float(np.std(self.ca_folds)) if self.ca_folds else None

    @property
    def cached(self) -> bool:
        """Whether every embedding came from the cache (so ``seconds`` is short)."""
        return self.result is not None and len(self.result) > 0 \
            and self.result.n_cached == len(self.result)


def parse_candidates(text: str) -> list[Candidate]:
    """A comma-separated list of ``BACKBONE`` or ``BACKBONE:LAYER``."""
    candidates = [Candidate.parse(item) for item in text.split(",") if item.strip()]
    if not candidates:
        raise SettingsError("give at least one candidate, e.g. -tm MobileNet,ResNet50")
    return list(dict.fromkeys(candidates))


def folds_for(labels: list[str], folds: int) -> int:
    """The number of folds the labels allow (each class in every fold), or an error."""
    if folds < 2:
        raise SettingsError(f"--cv needs at least 2 folds, got {folds}")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise SettingsError("comparing needs images of at least two classes")
    if counts.min() < 2:
        raise SettingsError(f"class {classes[counts.argmin()]!r} has only one image; "
                            f"each class needs at least two")
    return int(min(folds, counts.min()))


def default_estimator():
    """The probe that scores by default: a standardised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def scorer_name(estimator) -> str:
    """A short name of an estimator: its ``name`` attribute where it has one (an
    adapted Orange learner), else its class (a pipeline's last step's)."""
    if estimator is None:
        return DEFAULT_SCORER
    name = getattr(estimator, "name", None)
    if isinstance(name, str) and name:
        return name
    steps = getattr(estimator, "steps", None)
    final = steps[-1][1] if steps else estimator
    return type(final).__name__


def _auc(model, X: np.ndarray, y: np.ndarray) -> float | None:
    """The fold's AUC from probabilities, else decision values; None with neither."""
    from sklearn.metrics import roc_auc_score

    classes = getattr(model, "classes_", None)
    if classes is None:
        return None
    if hasattr(model, "predict_proba"):
        values = model.predict_proba(X)
    elif hasattr(model, "decision_function"):
        values = model.decision_function(X)
    else:
        return None
    if len(classes) == 2:
        values = values[:, 1] if np.ndim(values) == 2 else values
        return float(roc_auc_score(y == classes[1], values))
    if not hasattr(model, "predict_proba"):
        return None  # one-against-rest AUC needs probabilities
    return float(roc_auc_score(y, values, multi_class="ovr", labels=classes))


def cross_validate(embeddings: np.ndarray, labels: list[str], folds: int = DEFAULT_FOLDS,
                   seed: int = SEED, estimator=None
                   ) -> tuple[float, float | None, float, list[float]]:
    """Mean CA, AUC and F1 over stratified folds, and each fold's CA, of a clone of
    ``estimator`` (a scikit-learn classifier; None: :func:`default_estimator`) fitted on
    each fold's training part."""
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    X = np.asarray(embeddings, np.float64)
    splitter = StratifiedKFold(n_splits=folds_for(labels, folds), shuffle=True,
                               random_state=seed)
    cas, aucs, f1s = [], [], []
    for train, test in splitter.split(X, y):
        model = default_estimator() if estimator is None else clone(estimator)
        model.fit(X[train], y[train])
        predicted = np.asarray(model.predict(X[test]))
        cas.append(accuracy_score(y[test], predicted))
        f1s.append(f1_score(y[test], predicted, average="weighted"))
        aucs.append(_auc(model, X[test], y[test]))
    auc = None if None in aucs else float(np.mean(aucs))
    return float(np.mean(cas)), auc, float(np.mean(f1s)), [float(v) for v in cas]


def candidate_config(candidate: Candidate, settings: dict) -> EmbedConfig:
    """A candidate's settings: its backbone and layer, and the shared ``settings``
    (each backbone at its own default input size unless one is given; the width
    ``alpha`` for the backbones that take it)."""
    backbone = get_backbone(candidate.model)
    alpha = float(settings.get("alpha", 1.0))
    settings = {**settings, "alpha": backbone.usable_alpha(alpha)}
    return EmbedConfig(model=backbone.name, layer=candidate.layer, **settings)


def check_candidates(candidates: list[Candidate], settings: dict) -> None:
    """Every candidate's settings, layer names included (:func:`.jobs.check`), before any
    work: a misspelt backbone or layer stops the comparison with one message."""
    for candidate in candidates:
        check(candidate_config(candidate, settings))


def score_candidate(source: Source, settings: dict, candidate: Candidate,
                    folds: int = DEFAULT_FOLDS, hooks: Hooks | None = None,
                    client=None, estimator=None) -> Score:
    """Embed ``source`` with one candidate and score it with ``estimator``."""
    score = Score(candidate, scorer=scorer_name(estimator))
    started = time.perf_counter()
    try:
        result = run_job(source, candidate_config(candidate, settings), hooks, client=client)
    except TransferEmbedError as exc:
        score.error = " ".join(str(exc).split())  # one line, for a table cell
        return score
    score.seconds = time.perf_counter() - started
    score.result = result
    score.features = int(result.embeddings.shape[1]) if len(result) else None
    if source.labels is None:
        score.error = "the images have no classes to score against"
        return score
    try:
        score.ca, score.auc, score.f1, score.ca_folds = cross_validate(
            result.embeddings, label_texts(result.labels, len(result)), folds,
            estimator=estimator)
    except SettingsError as exc:
        score.error = str(exc)
    return score


def compare(source: Source, candidates: list[Candidate], settings: dict,
            folds: int = DEFAULT_FOLDS, hooks: Hooks | None = None, client=None,
            estimator=None) -> list[Score]:
    """Score every candidate on ``source`` with a clone of ``estimator`` (a scikit-learn
    classifier; None: a standardised logistic regression); progress runs over all.

    ``settings`` are the :class:`EmbedConfig` settings the candidates share
    (weights, alpha, input size, runtime, ...). Each candidate's backbone is
    checked first, so that a misspelt name stops the comparison before any
    work. The scores come in the candidates' order (see :func:`ranked`).
    """
    hooks = hooks or Hooks()
    check_candidates(candidates, settings)
    total, count = len(source), len(candidates)
    scores = []
    for k, candidate in enumerate(candidates):
        hooks.check_cancelled()
        if hooks.status is not None:
            hooks.status(f"Embedding with {candidate.label} ({k + 1} of {count})")
        step = hooks.with_progress(
            lambda done, _total, k=k: hooks.report(k * total + done, count * total))
        scores.append(score_candidate(source, settings, candidate, folds, step, client,
                                      estimator))
    hooks.report(count * total, count * total)
    return scores


def ranked(scores: list[Score]) -> list[Score]:
    """Scored candidates by CA (best first), then those that failed."""
    return sorted(scores, key=lambda s: (s.ca is None, -(s.ca or 0.0), s.seconds))


def best(scores: list[Score]) -> Score | None:
    top = ranked(scores)
    return top[0] if top and top[0].ca is not None else None
