"""What a run writes, named on the terminal by full paths; Orange's tab file (``-to-tab``)
with ``Class`` as its class variable and the settings in its attributes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed.cli.main import main

FAST = ["-tm", "MobileNet", "--alpha", "0.25", "-weights", "None", "--input-size", "64",
        "--no-cache"]


@pytest.fixture
def table_csv(tmp_path):
    """A label,path CSV of five images (one with a label holding a comma and a tab)
    and one that cannot be read."""
    folder = tmp_path / "in"
    folder.mkdir()
    rows = []
    for i, label in enumerate(["ants", "bees", "ants", "bees", "odd, \tone"]):
        Image.new("RGB", (50, 40), (40 * i, 90, 200 - 30 * i)).save(folder / f"{i}.png")
        rows.append([label, f"{i}.png"])
    rows.append(["ants", "missing.png"])
    with open(folder / "table.csv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    return folder / "table.csv"


def _wrote(out: str) -> list[str]:
    return [line.removeprefix("Wrote ") for line in out.splitlines()
            if line.startswith("Wrote ")]


def test_a_run_names_what_it_wrote_by_full_paths(table_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["-csv", str(table_csv), *FAST, "-dir", "out", "-n", "run"]) == 0
    out = (tmp_path / "out").resolve()
    assert _wrote(capsys.readouterr().out) == [
        str(out / "run_data.npy"), str(out / "run_labels.npy"), str(out / "run_skipped.csv")]
    assert main(["-csv", str(table_csv), *FAST, "-dir", "out", "-n", "run", "-to-csv",
                 "-to-tab"]) == 0
    assert _wrote(capsys.readouterr().out) == [
        str(out / "run.csv"), str(out / "run.tab"), str(out / "run.tab.metadata"),
        str(out / "run_skipped.csv")]


def test_compare_names_its_scores_and_chart(tmp_path, capsys):
    from orangecontrib.transferembed.cli.demo import make_demo_images

    make_demo_images(tmp_path / "in", per_class=4, size=64)
    assert main(["compare", "--folder", str(tmp_path / "in"), "-tm",
                 "MobileNet,MobileNet:conv_pw_7_relu", "--alpha", "0.25", "-weights", "None",
                 "--input-size", "64", "--cv", "2", "-dir", str(tmp_path / "out"),
                 "-n", "c", "-q"]) == 0
    out = (tmp_path / "out").resolve()
    assert _wrote(capsys.readouterr().out) == [str(out / "c_compare.csv"),
                                                str(out / "c_compare.png")]


def test_tab_output_opens_in_orange_with_class_as_its_target(table_csv, tmp_path):
    from Orange.data import ContinuousVariable, DiscreteVariable, Table

    out = tmp_path / "out"
    assert main(["-csv", str(table_csv), *FAST, "-dir", str(out), "-n", "e", "-q"]) == 0
    assert main(["-csv", str(table_csv), *FAST, "-dir", str(out), "-n", "e", "-to-tab",
                 "-q"]) == 0
    table = Table(str(out / "e.tab"))
    assert isinstance(table.domain.class_var, DiscreteVariable)
    assert table.domain.class_var.name == "Class"
    assert set(table.domain.class_var.values) == {"ants", "bees", "odd, \tone"}
    assert all(isinstance(v, ContinuousVariable) for v in table.domain.attributes)
    assert [v.name for v in table.domain.attributes] == [f"n{i}" for i in range(256)]
    labels = np.load(out / "e_labels.npy")[:, 0]
    assert [table.domain.class_var.values[int(v)] for v in table.Y] == labels.tolist()
    assert np.array_equal(table.X.astype(np.float32), np.load(out / "e_data.npy"))
    assert table.attributes["backbone"] == "MobileNet"
    assert table.attributes["width"] == "0.25" and table.attributes["weights"] == "random"
    assert table.attributes["input_size"] == "64" and table.attributes["layer"] == "default"
    assert table.attributes["runtime"] in ("keras", "tflite", "openvino")
    assert not (out / "e.csv").exists()


def test_the_seed_compatible_csv_is_unchanged(table_csv, tmp_path):
    """-to-csv still writes exactly ``Class,n0,...`` and one row per image, %.9g values."""
    out = tmp_path / "out"
    assert main(["-csv", str(table_csv), *FAST, "-dir", str(out), "-n", "e", "-q"]) == 0
    assert main(["-csv", str(table_csv), *FAST, "-dir", str(out), "-n", "e", "-to-csv",
                 "-q"]) == 0
    data, labels = np.load(out / "e_data.npy"), np.load(out / "e_labels.npy")[:, 0]
    expected = "Class," + ",".join(f"n{i}" for i in range(256)) + "\n"
    for label, row in zip(labels, data, strict=True):
        cell = f'"{label}"' if "," in label else label
        expected += cell + "," + ",".join(f"{v:.9g}" for v in row.tolist()) + "\n"
    assert (out / "e.csv").read_text(encoding="utf-8") == expected
