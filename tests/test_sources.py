"""Sources: the npy pair, the label,path CSV, class folders, lists of paths and arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed.errors import ImageError, SourceError
from orangecontrib.transferembed.pipeline.sources import (
    ArraySource,
    FileSource,
    as_source,
    csv_source,
    folder_source,
    npy_source,
)


def rows(source, size=None):
    """Every item decoded at its own size (or ``size``)."""
    return [source.decode(source.read(i), size, "stretch", 1) for i in range(len(source))]


def save(path: Path, array) -> Path:
    np.save(path, np.asarray(array))
    return path


def image_file(path: Path, color=(10, 20, 30), size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


# --- npy pair ---

def test_seed_toy_npy_pair(seed_toy):
    source = npy_source(seed_toy / "toy_data.npy", seed_toy / "toy_labels.npy", 45, 80, 3)
    assert len(source) == 100
    assert source.labels.shape == (100,)
    first = source.decode(source.read(0), None, "stretch", 1)
    raw = np.load(seed_toy / "toy_data.npy")[0].reshape(45, 80, 3)
    assert np.array_equal(first, raw)


def test_flattened_rows_are_hwc(tmp_path):
    images = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    data = save(tmp_path / "d.npy", images.reshape(2, -1))
    labels = save(tmp_path / "l.npy", [5, 7])
    source = npy_source(data, labels, 3, 4, 3)
    decoded = rows(source)
    assert np.array_equal(decoded[1], images[1])
    assert source.labels.tolist() == [5, 7]


@pytest.mark.parametrize("shape", [(3, 6, 8, 3), (3, 6, 8), (3, 6, 8, 1), (3, 6, 8, 4)])
def test_shaped_arrays(tmp_path, shape):
    images = np.full(shape, 120, np.uint8)
    if len(shape) == 4 and shape[3] == 4:
        images[..., 3] = 255
    source = npy_source(save(tmp_path / "d.npy", images), save(tmp_path / "l.npy", [0, 1, 2]))
    for pixels in rows(source):
        assert pixels.shape == (6, 8, 3)
        assert np.all(pixels == 120)


@pytest.mark.parametrize("channels", [1, 4])
def test_flattened_rows_with_one_or_four_channels_become_rgb(tmp_path, channels):
    images = np.full((2, 5, 7, channels), 60, np.uint8)
    images[..., -1] = 255 if channels == 4 else 60
    data = save(tmp_path / "d.npy", images.reshape(2, -1))
    source = npy_source(data, save(tmp_path / "l.npy", [0, 1]), 5, 7, channels)
    for pixels in rows(source):
        assert pixels.shape == (5, 7, 3)
        assert np.all(pixels == 60)


@pytest.mark.parametrize("labels", [[1, 2, 3], [[1], [2], [3]]])
def test_labels_n_or_n_by_1(tmp_path, labels):
    source = npy_source(save(tmp_path / "d.npy", np.zeros((3, 4, 4, 3), np.uint8)),
                        save(tmp_path / "l.npy", labels))
    assert source.labels.tolist() == [1, 2, 3]


def test_string_labels(tmp_path):
    source = npy_source(save(tmp_path / "d.npy", np.zeros((2, 4, 4), np.uint8)),
                        save(tmp_path / "l.npy", np.array(["ant", "bee"])))
    assert source.labels.tolist() == ["ant", "bee"]


@pytest.mark.parametrize("dtype, value, expected", [
    (np.uint8, 200, 200), (np.float32, 0.5, 128), (np.float64, 1.0, 255),
    (np.float32, 100.0, 100), (np.float64, 300.0, 1), (np.int16, 50, 50)])
def test_data_types(tmp_path, dtype, value, expected):
    data = save(tmp_path / "d.npy", np.full((2, 4 * 4 * 3), value, dtype))
    source = npy_source(data, None, 4, 4, 3)
    assert source.labels is None
    assert all(np.all(p == expected) for p in rows(source))


def test_rows_are_resized_to_the_input(tmp_path):
    data = save(tmp_path / "d.npy", np.zeros((2, 45, 80, 3), np.uint8))
    assert all(p.shape == (32, 32, 3) for p in rows(npy_source(data, None), (32, 32)))


def test_label_count_must_match_the_rows(tmp_path):
    data = save(tmp_path / "d.npy", np.zeros((4, 12), np.uint8))
    with pytest.raises(SourceError, match="4 images but 3 labels"):
        npy_source(data, save(tmp_path / "l.npy", [0, 1, 2]), 2, 2, 3)


def test_row_size_must_be_h_w_c(tmp_path):
    data = save(tmp_path / "d.npy", np.zeros((4, 100), np.uint8))
    with pytest.raises(SourceError, match="100 values.*45.*80.*-he"):
        npy_source(data, None, 45, 80, 3)


def test_flattened_rows_need_the_shape(tmp_path):
    data = save(tmp_path / "d.npy", np.zeros((4, 12), np.uint8))
    with pytest.raises(SourceError, match="-he"):
        npy_source(data, None)


def test_bad_channel_count(tmp_path):
    data = save(tmp_path / "d.npy", np.zeros((4, 12), np.uint8))
    with pytest.raises(SourceError, match="channels must be 1, 3 or 4"):
        npy_source(data, None, 3, 2, 2)
    with pytest.raises(SourceError, match="1, 3 or 4 channels"):
        ArraySource(np.zeros((2, 4, 4, 2), np.uint8))


def test_one_dimensional_data_is_refused(tmp_path):
    data = save(tmp_path / "d.npy", np.zeros(48, np.uint8))
    with pytest.raises(SourceError, match="dimensional"):
        npy_source(data, None, 4, 4, 3)


def test_object_npy_is_refused_never_unpickled(tmp_path):
    evil = np.empty(2, dtype=object)
    evil[0], evil[1] = {"a": 1}, [1, 2]
    np.save(tmp_path / "d.npy", evil, allow_pickle=True)
    with pytest.raises(SourceError, match="Python objects"):
        npy_source(tmp_path / "d.npy", None, 1, 1, 3)
    good = save(tmp_path / "g.npy", np.zeros((2, 3), np.uint8))
    np.save(tmp_path / "l.npy", evil, allow_pickle=True)
    with pytest.raises(SourceError, match="labels.*Python objects"):
        npy_source(good, tmp_path / "l.npy", 1, 1, 3)


def test_one_hot_labels_are_refused(tmp_path):
    data = save(tmp_path / "d.npy", np.zeros((3, 12), np.uint8))
    labels = save(tmp_path / "l.npy", np.eye(3, dtype=np.uint8))
    with pytest.raises(SourceError, match="one-hot.*argmax"):
        npy_source(data, labels, 2, 2, 3)


def test_missing_or_broken_npy(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        npy_source(tmp_path / "nope.npy", None, 1, 1, 3)
    (tmp_path / "bad.npy").write_bytes(b"not a npy file at all")
    with pytest.raises(SourceError, match="not a npy file"):
        npy_source(tmp_path / "bad.npy", None, 1, 1, 3)


def test_npy_is_memory_mapped(tmp_path):
    data = save(tmp_path / "d.npy", np.zeros((3, 12), np.uint8))
    assert isinstance(npy_source(data, None, 2, 2, 3).data, np.memmap)


def test_subset_keeps_rows_and_labels(tmp_path):
    images = np.arange(4)[:, None, None].repeat(2, 1).repeat(2, 2).astype(np.uint8)
    source = ArraySource(images, ["a", "b", "c", "d"])
    sub = source.subset([3, 1])
    assert sub.labels.tolist() == ["d", "b"]
    assert sub.read(0)[0, 0] == 3


# --- CSV ---

def test_seed_toy_csv(seed_toy):
    source = csv_source(seed_toy / "toy_table.csv")
    assert len(source) == 3
    assert all(Path(p).is_file() for p in source.paths)
    assert all(Path(p).parent == seed_toy or seed_toy in Path(p).parents for p in source.paths)


def test_csv_paths_are_relative_to_the_csv(tmp_path, monkeypatch):
    image_file(tmp_path / "data" / "imgs" / "a.png")
    csv = tmp_path / "data" / "list.csv"
    csv.write_text(f"cat,imgs/a.png\ndog,{tmp_path / 'abs.png'}\n")
    monkeypatch.chdir(tmp_path)
    source = csv_source("data/list.csv")
    assert Path(source.paths[0]).resolve() == (tmp_path / "data/imgs/a.png").resolve()
    assert source.read(0)[:4] == b"\x89PNG"
    assert source.paths[1] == str(tmp_path / "abs.png")
    assert source.labels.tolist() == ["cat", "dog"]


@pytest.mark.parametrize("header", ["label,path", "Class,File", "class,image", "Label, Path"])
def test_csv_header_is_recognised(tmp_path, header):
    csv = tmp_path / "t.csv"
    csv.write_text(f"{header}\nant,a.jpg\nbee,b.jpg\n")
    source = csv_source(csv)
    assert source.labels.tolist() == ["ant", "bee"]


def test_csv_blank_lines_and_quotes(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text('\n"ant, red","my, file.jpg"\n\n  \nbee,"b ""q"".jpg"\n,,\n')
    source = csv_source(csv)
    assert source.labels.tolist() == ["ant, red", "bee"]
    assert [Path(p).name for p in source.paths] == ["my, file.jpg", 'b "q".jpg']


def test_csv_with_bom_and_crlf(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_bytes("\ufefflabel,path\r\nant,a.jpg\r\n".encode())
    assert csv_source(csv).labels.tolist() == ["ant"]


@pytest.mark.parametrize("text", ["", "\n\n", "label,path\n"])
def test_empty_csv(tmp_path, text):
    csv = tmp_path / "t.csv"
    csv.write_text(text)
    with pytest.raises(SourceError, match="lists no images"):
        csv_source(csv)


def test_csv_that_is_not_utf8(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_bytes("abeille,\u00e9t\u00e9.jpg\n".encode("latin-1"))
    with pytest.raises(SourceError, match="not UTF-8"):
        csv_source(csv)


def test_csv_row_without_a_path(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("ant,a.jpg\nbee\n")
    with pytest.raises(SourceError, match="line 2.*label,path"):
        csv_source(csv)


def test_missing_csv(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        csv_source(tmp_path / "none.csv")


# --- folders, lists, arrays ---

def test_folder_with_one_subfolder_per_class(tmp_path):
    image_file(tmp_path / "ants" / "a1.jpg")
    image_file(tmp_path / "ants" / "deep" / "nested" / "a2.png")
    image_file(tmp_path / "bees" / "b1.PNG")
    image_file(tmp_path / "bees" / ".hidden.png")
    image_file(tmp_path / ".git" / "x.png")
    (tmp_path / "bees" / "notes.txt").write_text("not an image")
    source = folder_source(tmp_path)
    names = [Path(p).name for p in source.paths]
    assert names == ["a1.jpg", "a2.png", "b1.PNG"]
    assert source.labels.tolist() == ["ants", "ants", "bees"]


def test_folder_without_classes(tmp_path):
    image_file(tmp_path / "x.png")
    image_file(tmp_path / "y.bmp")
    source = folder_source(tmp_path)
    assert len(source) == 2 and source.labels is None


def test_hymenoptera_folder(hymenoptera):
    source = folder_source(hymenoptera / "train")
    assert set(source.labels.tolist()) == {"ants", "bees"}
    assert len(source) > 200


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(SourceError, match="holds no images"):
        folder_source(tmp_path)
    with pytest.raises(SourceError, match="does not exist"):
        folder_source(tmp_path / "nope")


def test_list_of_paths(tmp_path):
    first = image_file(tmp_path / "a.png")
    source = as_source([first, str(tmp_path / "missing.jpg")], labels=["x", "y"])
    assert isinstance(source, FileSource)
    assert source.labels.tolist() == ["x", "y"]
    assert source.read(0)[:4] == b"\x89PNG"
    with pytest.raises(ImageError, match="not found"):
        source.read(1)
    with pytest.raises(ImageError, match="folder"):
        FileSource([tmp_path]).read(0)


def test_list_of_paths_label_count(tmp_path):
    with pytest.raises(SourceError, match="2 images but 1 labels"):
        as_source(["a.png", "b.png"], labels=["x"])


def test_arrays(tmp_path):
    array = np.zeros((3, 8, 8, 3), np.uint8)
    source = as_source(array, labels=[0, 1, 1])
    assert isinstance(source, ArraySource) and len(source) == 3
    flat = as_source(array.reshape(3, -1), shape=(8, 8, 3))
    assert rows(flat)[0].shape == (8, 8, 3)
    with pytest.raises(SourceError, match="numeric"):
        as_source(np.array([["a"]]))


def test_as_source_dispatches_paths(tmp_path, seed_toy):
    image_file(tmp_path / "c" / "x.png")
    assert isinstance(as_source(tmp_path), FileSource)
    assert len(as_source(seed_toy / "toy_table.csv")) == 3
    toy = as_source(str(seed_toy / "toy_data.npy"), str(seed_toy / "toy_labels.npy"),
                    (45, 80, 3))
    assert len(toy) == 100 and len(toy.labels) == 100
    with pytest.raises(SourceError, match="not a folder"):
        as_source(tmp_path / "x.docx")
    with pytest.raises(SourceError, match="cannot embed"):
        as_source(42)


def test_content_hash_follows_content(tmp_path):
    a = image_file(tmp_path / "a.png")
    b = image_file(tmp_path / "b.png")
    source = FileSource([a, b])
    assert source.content_hash(source.read(0)) == source.content_hash(source.read(1))
    array = ArraySource(np.zeros((2, 4, 4), np.uint8))
    assert array.content_hash(array.read(0)) != array.content_hash(
        np.zeros((4, 4), np.uint16))


def test_float_scale_is_decided_for_the_whole_data_set(tmp_path):
    """A dark image of a 0..255 float set is not mistaken for a 0..1 image."""
    data = np.stack([np.full((4, 4, 3), 0.9, np.float32), np.full((4, 4, 3), 200, np.float32)])
    first, second = rows(ArraySource(data))
    assert np.all(first == 1) and np.all(second == 200)
    unit = rows(ArraySource(data / 200))  # the same set in 0..1
    assert np.all(unit[0] == 1) and np.all(unit[1] == 255)


def test_header_with_unknown_words_is_recognised(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    table = tmp_path / "t.csv"
    table.write_text("Kind,Picture\nant,a.png\n", encoding="utf-8")
    source = csv_source(table)
    assert source.labels.tolist() == ["ant"] and len(source) == 1


def test_zero_byte_npy_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="cannot read npy data file"):
        npy_source(empty, None, 4, 4, 3)
