"""Conversion between Orange tables and the engine.

Input: find the columns of a table that hold image paths and make a
:class:`~.sources.FileSource` of one. Output: the Embeddings table (the input's
rows, or the source's labels as ``Class``, with features ``n0..nK``) and the
Skipped Images table (the rows that could not be embedded, with a ``reason``).

The conventions follow Orange's Image Analytics add-on, so that the two work
together: the image column is a meta ``StringVariable`` with
``attributes["type"] == "image"`` and ``attributes["origin"]`` its base
folder, and the features are hidden from long drop-downs. Only the widget
imports this module; the command line never imports Orange.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from Orange.data import (
    ContinuousVariable,
    DiscreteVariable,
    Domain,
    StringVariable,
    Table,
    Variable,
)
from Orange.data.util import get_unique_names
from Orange.misc.collections import natural_sorted

from ..pipeline.results import EmbeddingResult
from ..pipeline.sources import FileSource, Source
from ..writers import label_texts

#: Names of the columns the widget adds.
CLASS_NAME, IMAGE_NAME, ROW_NAME, REASON_NAME = "Class", "image", "row", "reason"


def is_image_column(var: Variable) -> bool:
    """Whether ``var`` is marked as holding images (``type=image``)."""
    return var.attributes.get("type") == "image"


def image_columns(domain: Domain) -> list[Variable]:
    """String and discrete attributes and metas that may hold image paths,
    those marked ``type=image`` first."""
    candidates = [var for var in domain.metas + domain.attributes
                  if isinstance(var, (StringVariable, DiscreteVariable))]
    return sorted(candidates, key=lambda var: not is_image_column(var))


def column_paths(data: Table, column: Variable) -> list[str]:
    """The paths in ``column`` of ``data`` as text; missing values as ``""``."""
    values = data.get_column(column)
    if column.is_discrete:
        return ["" if np.isnan(v) else column.values[int(v)] for v in values]
    return ["" if v is None or isinstance(v, float) and np.isnan(v) else str(v).strip()
            for v in values]


class TableFileSource(FileSource):
    """Image paths from a table's ``column``; rows without a path are skipped. The
    output table moves that column to the metas (:func:`embeddings_table`)."""

    def __init__(self, paths: list[str], base: str | None, column: Variable):
        super().__init__(paths, None, base)
        self.column = column


def table_source(data: Table, column: Variable) -> TableFileSource:
    """A source of the images named in ``column``; relative paths are taken
    from the column's ``origin``."""
    return TableFileSource(column_paths(data, column), column.attributes.get("origin"), column)


def natural_order(values) -> list[str]:
    """Distinct values; numeric-looking ones ordered numerically, the rest naturally."""
    values = set(values) - {""}
    try:
        return sorted(values, key=float)
    except ValueError:
        return natural_sorted(values)


def class_variable(labels: np.ndarray) -> tuple[DiscreteVariable, np.ndarray]:
    """``DiscreteVariable("Class")`` for a source's labels, and their codes."""
    texts = label_texts(labels)
    values = natural_order(texts)
    index = {value: i for i, value in enumerate(values)}
    codes = np.array([index.get(text, np.nan) for text in texts], float)
    return DiscreteVariable(CLASS_NAME, values=values), codes


def feature_variables(names: list[str], used: Domain | None = None) -> list[ContinuousVariable]:
    """The embedding features, renamed unique against ``used``, hidden from
    long drop-downs as in Image Analytics."""
    if used is not None:
        names = get_unique_names(used, names)
    features = [ContinuousVariable(name) for name in names]
    for var in features:
        var.attributes["hidden"] = True
    return features


def image_variable() -> StringVariable:
    """The meta that holds the image paths of a source that is not a table."""
    var = StringVariable(IMAGE_NAME)
    var.attributes["type"] = "image"
    return var


class _SourceTable:
    """The columns of a table made from a source that is not a table."""

    def __init__(self, source: Source):
        self.source = source
        self.class_var, self.codes = (None, None) if source.labels is None \
            else class_variable(source.labels)
        if isinstance(source, FileSource):
            self.meta = image_variable()
            self.meta_values = np.array(source.paths, object)
        else:
            self.meta = ContinuousVariable(ROW_NAME, number_of_decimals=0)
            self.meta_values = np.arange(len(source), dtype=float)

    def table(self, rows: np.ndarray, attributes=(), X=None, extra_metas=(),
              extra_values=None, name="") -> Table:
        rows = np.asarray(rows, int)
        metas = [self.meta, *extra_metas]
        meta_values = self.meta_values[rows].reshape(-1, 1).astype(object)
        if extra_values is not None:
            meta_values = np.hstack([meta_values, extra_values])
        domain = Domain(list(attributes), self.class_var, metas)
        X = np.empty((len(rows), 0)) if X is None else X
        Y = None if self.codes is None else self.codes[rows]
        table = Table.from_numpy(domain, X, Y, meta_values)
        table.name = name
        return table


def embeddings_table(result: EmbeddingResult, data: Table | None = None) -> Table | None:
    """The embedded rows with features ``n0..nK``; None if nothing was embedded.

    With ``data`` (the input table the source was made from) the output keeps
    its attributes, class, metas and row ids; otherwise the class is made from
    the source's labels and the metas hold the image path (or the row number).
    ``Table.attributes`` records what made the features (backbone, width, layer,
    pooling, weights, input size, resize, runtime, precision:
    :meth:`~.EmbedConfig.provenance`), so tables of other settings can be told apart.
    """
    if len(result) == 0:
        return None
    if data is None:
        features = feature_variables(result.feature_names)
        table = _SourceTable(result.source).table(result.indices, features,
                                                  result.embeddings, name="Embeddings")
        table.attributes = result.config.provenance()
        return table
    attributes, metas = list(data.domain.attributes), list(data.domain.metas)
    column = result.source.column if isinstance(result.source, TableFileSource) else None
    if column in attributes:  # a path is no feature to learn from: it becomes a meta
        attributes.remove(column)
        metas.append(column)
    rows = data[result.indices].transform(Domain(attributes, data.domain.class_vars, metas))
    features = feature_variables(result.feature_names, data.domain)
    domain = Domain(attributes + features, data.domain.class_vars, metas)
    X = rows.X.toarray() if sp.issparse(rows.X) else rows.X
    attributes = {**(data.attributes if isinstance(data.attributes, dict) else {}),
                  **result.config.provenance()}
    table = Table.from_numpy(domain, np.hstack([X, result.embeddings]), rows.Y, rows.metas,
                             ids=rows.ids, attributes=attributes)
    table.name = "Embeddings"
    return table


def skipped_table(result: EmbeddingResult, data: Table | None = None) -> Table | None:
    """The rows that could not be embedded, with a meta ``reason``; None if none."""
    if not result.skipped:
        return None
    rows = np.array([s.index for s in result.skipped], int)
    reasons = np.array([[s.reason] for s in result.skipped], object)
    if data is None:
        return _SourceTable(result.source).table(
            rows, extra_metas=[StringVariable(REASON_NAME)], extra_values=reasons,
            name="Skipped Images")
    reason = StringVariable(get_unique_names(data.domain, REASON_NAME))
    skipped = data[rows]
    domain = Domain(data.domain.attributes, data.domain.class_vars,
                    data.domain.metas + (reason,))
    table = Table.from_numpy(domain, skipped.X, skipped.Y,
                             np.hstack([skipped.metas.astype(object), reasons]),
                             ids=skipped.ids, attributes=data.attributes)
    table.name = "Skipped Images"
    return table
