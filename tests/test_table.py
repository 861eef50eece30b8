"""Orange tables in and out of the engine (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pytest
from Orange.data import ContinuousVariable, DiscreteVariable, Domain, StringVariable, Table
from PIL import Image

from orangecontrib.transferembed.config import EmbedConfig
from orangecontrib.transferembed.errors import ImageError
from orangecontrib.transferembed.pipeline.results import EmbeddingResult, Skipped
from orangecontrib.transferembed.pipeline.sources import ArraySource, FileSource
from orangecontrib.transferembed.widgets.table import (
    class_variable,
    embeddings_table,
    image_columns,
    natural_order,
    skipped_table,
    table_source,
)
from orangecontrib.transferembed.writers import label_texts


def image_table(origin: str, paths: list[str], classes: list[str] | None = None) -> Table:
    """A table shaped like Image Analytics' Import Images output."""
    image = StringVariable("image")
    image.attributes.update(type="image", origin=origin)
    category = DiscreteVariable("category", values=("ants", "bees"))
    domain = Domain([], category, [StringVariable("image name"), image,
                                   ContinuousVariable("size")])
    classes = classes or ["ants"] * len(paths)
    metas = np.array([[p.rsplit(".", 1)[0], p, 1.0] for p in paths], object)
    y = np.array([category.values.index(c) for c in classes], float)
    return Table.from_numpy(domain, np.empty((len(paths), 0)), y, metas)


def fake_result(source, embedded, skipped=(), k=4) -> EmbeddingResult:
    embedded = np.asarray(embedded, int)
    embeddings = np.arange(len(embedded) * k, dtype=np.float32).reshape(-1, k)
    return EmbeddingResult(embeddings, embedded,
                           [Skipped(i, source.describe(i), "file not found") for i in skipped],
                           source, EmbedConfig())


def test_image_columns_marked_first():
    plain, marked = StringVariable("path"), StringVariable("picture")
    marked.attributes["type"] = "image"
    disc = DiscreteVariable("file", values=("a.jpg", "b.jpg"))
    domain = Domain([ContinuousVariable("x"), disc], None, [plain, marked])
    assert image_columns(domain) == [marked, plain, disc]
    assert image_columns(Domain([ContinuousVariable("x")])) == []


def test_table_source_resolves_origin_and_missing(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    data = image_table(str(tmp_path), ["a.jpg", "", "/abs/b.jpg"])
    source = table_source(data, data.domain["image"])
    assert source.paths[0] == str(tmp_path / "a.jpg")
    assert source.paths[2] == "/abs/b.jpg"
    assert source.read(0) == b"x"
    with pytest.raises(ImageError, match="no image path"):
        source.read(1)


def test_table_source_discrete_column(tmp_path):
    var = DiscreteVariable("file", values=("a.jpg", "b.jpg"))
    var.attributes["origin"] = str(tmp_path)
    data = Table.from_numpy(Domain([var]), np.array([[1.0], [np.nan]]))
    source = table_source(data, var)
    assert source.paths[0] == str(tmp_path / "b.jpg")
    assert source.paths[1] == ""


def test_labels_keep_their_text():
    assert label_texts(np.array([2, 0], np.uint8)) == ["2", "0"]
    assert label_texts(np.array([2.0, 1.5, np.nan])) == ["2", "1.5", ""]
    assert label_texts(np.array(["b ", "a"])) == ["b", "a"]


def test_natural_order():
    assert natural_order(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert natural_order(["img10", "img2", "cat"]) == ["cat", "img2", "img10"]
    assert natural_order(["-1", "0.5", ""]) == ["-1", "0.5"]


def test_class_variable_codes():
    var, codes = class_variable(np.array([10, 2, 2], np.int64))
    assert var.name == "Class" and var.values == ("2", "10")
    np.testing.assert_array_equal(codes, [1, 0, 0])


def test_embeddings_from_input_table(tmp_path):
    data = image_table(str(tmp_path), ["a.jpg", "b.jpg", "c.jpg"], ["ants", "bees", "bees"])
    result = fake_result(table_source(data, data.domain["image"]), [0, 2], skipped=[1])
    table = embeddings_table(result, data)
    assert [v.name for v in table.domain.attributes] == ["n0", "n1", "n2", "n3"]
    assert all(v.attributes["hidden"] for v in table.domain.attributes)
    assert table.domain.class_var is data.domain.class_var
    assert table.domain.metas == data.domain.metas
    np.testing.assert_array_equal(table.ids, data.ids[[0, 2]])
    np.testing.assert_array_equal(table.X, result.embeddings)
    assert list(table.metas[:, 1]) == ["a.jpg", "c.jpg"]

    skipped = skipped_table(result, data)
    assert skipped.domain.metas[-1].name == "reason"
    assert list(skipped.metas[:, -1]) == ["file not found"]
    np.testing.assert_array_equal(skipped.ids, data.ids[[1]])
    assert skipped.domain.class_var is data.domain.class_var


def test_feature_names_made_unique(tmp_path):
    image = StringVariable("image")
    domain = Domain([ContinuousVariable("n0")], None, [image])
    data = Table.from_numpy(domain, np.array([[5.0]]), metas=np.array([["a.jpg"]], object))
    result = fake_result(table_source(data, image), [0], k=2)
    table = embeddings_table(result, data)
    names = [v.name for v in table.domain.attributes]
    assert names[0] == "n0" and len(set(names)) == 3
    np.testing.assert_array_equal(table.X[0], [5.0, 0.0, 1.0])


def test_file_source_tables_have_class_and_path(tmp_path):
    paths = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    source = FileSource(paths, np.array(["10", "2", "2"]))
    result = fake_result(source, [0, 1], skipped=[2])
    table = embeddings_table(result)
    assert table.domain.class_var.name == "Class"
    assert table.domain.class_var.values == ("2", "10")
    assert [table.domain.class_var.values[int(v)] for v in table.Y] == ["10", "2"]
    image = table.domain.metas[0]
    assert image.name == "image" and image.attributes["type"] == "image"
    assert list(table.metas[:, 0]) == paths[:2]
    skipped = skipped_table(result)
    assert skipped.domain.class_var.values == ("2", "10")
    assert [m.name for m in skipped.domain.metas] == ["image", "reason"]
    assert list(skipped.metas[0]) == [paths[2], "file not found"]


def test_array_source_tables_have_row_numbers():
    source = ArraySource(np.zeros((3, 4, 4, 3), np.uint8), np.array([1, 0, 1], np.uint8))
    result = fake_result(source, [0, 2], skipped=[1])
    table = embeddings_table(result)
    assert table.domain.class_var.values == ("0", "1")
    assert table.domain.metas[0].name == "row"
    np.testing.assert_array_equal(table.metas[:, 0].astype(float), [0, 2])


def test_nothing_embedded_or_skipped_gives_none(tmp_path):
    source = FileSource([str(tmp_path / "a.jpg")])
    assert embeddings_table(fake_result(source, [], skipped=[0])) is None
    assert skipped_table(fake_result(source, [0])) is None
    table = embeddings_table(fake_result(source, [0]))
    assert table.domain.class_var is None


def test_attribute_path_column_becomes_a_meta(tmp_path):
    """A path read as a feature (File widget, discrete column) is not learned from."""
    from orangecontrib.transferembed.pipeline import engine

    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "a.png")
    path = DiscreteVariable("path", values=("a.png", "b.png"))
    path.attributes["origin"] = str(tmp_path)
    data = Table.from_numpy(Domain([path], DiscreteVariable("y", values=("p", "q"))),
                            np.array([[0.0], [1.0]]), np.array([0.0, 1.0]))
    source = table_source(data, path)
    result = engine.run(source, EmbedConfig(weights=None, alpha=0.25, cache=False))
    out = embeddings_table(result, data)
    assert [v.name for v in out.domain.attributes] == [f"n{i}" for i in range(256)]
    assert path in out.domain.metas and len(out) == 1
    part = source.subset([1])
    assert part.column is path and part.paths[0] != ""


def test_label_texts_keep_what_the_user_wrote():
    assert label_texts(np.array([b"ant", b"bee"])) == ["ant", "bee"]
    assert label_texts(np.array([0.123456789, 3.0])) == ["0.123456789", "3"]


PROVENANCE = ("backbone", "width", "layer", "pooling", "weights", "input_size", "resize",
              "runtime", "precision")


def test_tables_record_what_made_their_features(tmp_path):
    source = FileSource([str(tmp_path / "a.jpg")], np.array(["x"]))
    config = EmbedConfig(model="MobileNet", alpha=0.25, layer="conv_pw_11_relu",
                         pooling="max", weights=None, input_size=96, resize="stretch",
                         runtime="keras")
    result = EmbeddingResult(np.ones((1, 4), np.float32), np.array([0]), [], source, config)
    attributes = embeddings_table(result).attributes
    assert {key: attributes[key] for key in PROVENANCE} == {
        "backbone": "MobileNet", "width": "0.25", "layer": "conv_pw_11_relu",
        "pooling": "max", "weights": "random", "input_size": "96", "resize": "stretch",
        "runtime": "keras", "precision": "fp32"}
    other = embeddings_table(EmbeddingResult(result.embeddings, result.indices, [], source,
                                             config.with_(layer="conv_pw_7_relu")))
    assert other.attributes != attributes  # told apart


def test_input_table_attributes_are_kept_beside_the_provenance(tmp_path):
    weights = tmp_path / "mine.h5"
    weights.write_bytes(b"my weights")
    data = image_table(str(tmp_path), ["a.jpg"])
    data.attributes = {"origin note": "from Import Images"}
    result = EmbeddingResult(np.ones((1, 4), np.float32), np.array([0]), [],
                             table_source(data, data.domain["image"]),
                             EmbedConfig(weights=str(weights)))
    attributes = embeddings_table(result, data).attributes
    import hashlib

    assert attributes["origin note"] == "from Import Images"
    assert attributes["weights"] == "sha256:" + hashlib.sha256(b"my weights").hexdigest()
    assert attributes["backbone"] == "MobileNet" and attributes["width"] == "1"
    assert data.attributes == {"origin note": "from Import Images"}  # the input is untouched
