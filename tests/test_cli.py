"""The ``transferembed`` command line, end to end on real files."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed.cli.main import main

TOY = ["-he", "45", "-w", "80", "-tm", "MobileNet", "-weights", "None"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 240):
    """Run the installed command in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "orangecontrib.transferembed", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def toy_outputs(tmp_path_factory, seed_toy):
    """The toy npy pair embedded once as npy and once as CSV (in-process)."""
    out = tmp_path_factory.mktemp("toy")
    data, labels = str(seed_toy / "toy_data.npy"), str(seed_toy / "toy_labels.npy")
    assert main(["-data", data, "-labels", labels, *TOY, "-dir", str(out), "-n", "toy",
                 "-q", "--no-cache"]) == 0
    assert main(["-data", data, "-labels", labels, *TOY, "-dir", str(out), "-n", "toy",
                 "-to-csv", "-q", "--no-cache"]) == 0
    return out


def test_npy_pair_output_matches_original_format(toy_outputs, seed_toy):
    data = np.load(toy_outputs / "toy_data.npy", allow_pickle=False)
    labels = np.load(toy_outputs / "toy_labels.npy", allow_pickle=False)
    source_labels = np.load(seed_toy / "toy_labels.npy", allow_pickle=False)
    assert data.shape == (100, 1024) and data.dtype == np.float32
    assert labels.shape == (100, 1)
    assert labels.dtype == source_labels.dtype  # integers stay integers
    assert np.array_equal(labels[:, 0], source_labels.reshape(-1))
    # byte by byte: exactly what np.save writes for these arrays
    assert (toy_outputs / "toy_data.npy").read_bytes() == npy_bytes(data)
    assert (toy_outputs / "toy_labels.npy").read_bytes() == npy_bytes(labels)
    assert np.any(data != 0)


def test_csv_output_header_labels_and_values(toy_outputs):
    text = (toy_outputs / "toy.csv").read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[0] == "Class," + ",".join(f"n{i}" for i in range(1024))
    assert lines[-1] == "" and len(lines) == 102  # header, 100 rows, final newline
    rows = list(csv.reader(io.StringIO(text)))[1:]
    npy_data = np.load(toy_outputs / "toy_data.npy")
    npy_labels = np.load(toy_outputs / "toy_labels.npy")
    assert [row[0] for row in rows] == [str(int(v)) for v in npy_labels[:, 0]]
    assert all("." not in row[0] for row in rows)  # 2, never 2.0
    values = np.array([[float(v) for v in row[1:]] for row in rows]).astype(np.float32)
    assert np.array_equal(values, npy_data)  # the CSV round-trips float32 exactly


def test_csv_source_of_the_original_tool(seed_toy, tmp_path):
    assert main(["-csv", str(seed_toy / "toy_table.csv"), "-tm", "mobilenet", "--alpha",
                 "0.25", "-weights", "None", "-dir", str(tmp_path), "-n", "t", "-to-csv",
                 "-q"]) == 0
    rows = list(csv.reader(open(tmp_path / "t.csv", encoding="utf-8")))
    assert rows[0][:3] == ["Class", "n0", "n1"] and len(rows[0]) == 257
    assert [row[0] for row in rows[1:]] == ["left", "right", "up"]
    assert not (tmp_path / "t_skipped.csv").exists()


def write_image(path, size=(64, 48)):
    Image.new("RGB", size, (200, 30, 30)).save(path)


def test_bad_files_are_skipped_and_named(tmp_path, capsys):
    good = [tmp_path / f"good{i}.png" for i in range(3)]
    for path in good:
        write_image(path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not an image")
    table = tmp_path / "table.csv"
    table.write_text("label,path\n"
                     "a,good0.png\nb,missing.jpg\na,good1.png\nb,empty.jpg\n"
                     "\n"
                     "a,notes.jpg\n\"b, quoted\",good2.png\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["-csv", str(table), "-tm", "MobileNet", "--alpha", "0.25", "-weights",
                 "None", "-dir", str(out), "-n", "run", "-q"]) == 0
    err = capsys.readouterr().err
    for name, reason in [("missing.jpg", "not found"), ("empty.jpg", "empty"),
                         ("notes.jpg", "not an image")]:
        assert name in err and reason in err
    skipped = list(csv.DictReader(open(out / "run_skipped.csv", encoding="utf-8")))
    assert [os.path.basename(row["path"]) for row in skipped] == \
        ["missing.jpg", "empty.jpg", "notes.jpg"]
    labels = np.load(out / "run_labels.npy")
    assert labels[:, 0].tolist() == ["a", "a", "b, quoted"]
    assert np.load(out / "run_data.npy").shape == (3, 256)


def test_failed_run_leaves_existing_outputs_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = out / "run_data.npy"
    old.write_bytes(b"precious")
    table = tmp_path / "t.csv"
    table.write_text("a,nothere.png\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["-csv", str(table), "-tm", "MobileNet", "-weights", "None", "-dir", str(out),
              "-n", "run", "-q"])
    assert exc.value.code == 2
    assert old.read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["run_data.npy", "run_skipped.csv"]


@pytest.mark.parametrize("args, message", [
    (["-n", "a/b"], "path separator"),
    (["-tm", "NoSuchNet"], "Unknown model 'NoSuchNet'. See transferembed --list-models"),
    (["-tm", "MobileNot"], "Unknown model 'MobileNot'; did you mean 'MobileNet'?"),
    (["-tm", "resnet5"], "did you mean 'ResNet50'?"),
    ([], "give exactly one input"),
    (["-b", "0"], "batch size"),
    (["--alpha", "0.3"], "alpha"),
    (["--input-size", "big"], "--input-size"),
])
def test_bad_settings_exit_2_with_one_message(args, message, tmp_path, seed_toy, capsys):
    source = ["-csv", str(seed_toy / "toy_table.csv")] if args else []
    with pytest.raises(SystemExit) as exc:
        main([*source, "-tm", "MobileNet", *args, "-dir", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("transferembed: error:")


def test_npy_errors_exit_2(tmp_path, seed_toy, capsys):
    data = seed_toy / "toy_data.npy"
    short_labels = tmp_path / "labels.npy"
    np.save(short_labels, np.arange(7))
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    cases = [
        (["-data", str(data), "-labels", str(short_labels), "-he", "45", "-w", "80"],
         "100 images but 7 labels"),
        (["-data", str(data), "-labels", str(seed_toy / "toy_labels.npy")], "check -he"),
        (["-data", str(objects), "-labels", str(short_labels)], "Python objects"),
        (["-data", str(data)], "both -data and -labels"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            main([*args, "-tm", "MobileNet", "-weights", "None", "-dir", str(tmp_path)])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_unwritable_dir_exits_2(tmp_path, seed_toy, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["-csv", str(seed_toy / "toy_table.csv"), "-dir", str(blocker / "sub")])
    assert exc.value.code == 2
    assert "cannot write to -dir" in capsys.readouterr().err


def test_missing_dir_is_created(tmp_path, seed_toy):
    out = tmp_path / "a" / "b"
    assert main(["-csv", str(seed_toy / "toy_table.csv"), "-tm", "MobileNet", "--alpha",
                 "0.25", "-weights", "None", "-dir", str(out), "-q"]) == 0
    assert (out / "transferfeature_data.npy").is_file()


def test_offline_imagenet_weights_give_actionable_message(empty_keras_home, seed_toy,
                                                          tmp_path):
    started = time.monotonic()
    out = tmp_path / "out"
    proc = run_cli("-csv", str(seed_toy / "toy_table.csv"), "-tm", "VGG16", "-dir",
                   str(out), timeout=120)
    assert time.monotonic() - started < 60
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for text in ("vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                 "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/",
                 str(empty_keras_home / "models"), "-weights"):
        assert text in proc.stderr
    assert not list(out.iterdir())


def test_real_weights_from_keras_home(mobilenet_keras_home, seed_toy, tmp_path):
    """``-weights imagenet`` (the default) loads the file from $KERAS_HOME/models."""
    proc = run_cli("-csv", str(seed_toy / "toy_table.csv"), "-tm", "MobileNet", "--alpha",
                   "0.25", "-dir", str(tmp_path), "-n", "real")
    assert proc.returncode == 0, proc.stderr
    assert "Data shape (3, 256), Labels shape (3, 1)" in proc.stdout
    assert "Generating embeddings |" in proc.stderr and "3/3" in proc.stderr
    data = np.load(tmp_path / "real_data.npy")
    assert data.min() >= 0 and data.max() > 0.1  # real features, not ~1e-20


def test_list_models_does_not_import_tensorflow():
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys; from orangecontrib.transferembed.cli.main import main; "
         "main(['--list-models']); print('tensorflow' in sys.modules)"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[-1] == "False"
    assert any(line.startswith("VGG16") and "4096" in line for line in lines)
    assert any(line.startswith("MobileNet ") and "1024*a" in line for line in lines)


def test_sample_draws_rows_without_replacement(tmp_path, seed_toy):
    args = ["sample", str(seed_toy / "toy_data.npy"), str(seed_toy / "toy_labels.npy"),
            "-s", "40", "-n", "small", "--seed", "3", "-dir"]
    assert main([*args, str(tmp_path / "a")]) == 0
    assert main([*args, str(tmp_path / "b")]) == 0
    data = np.load(seed_toy / "toy_data.npy")
    labels = np.load(seed_toy / "toy_labels.npy")
    small = np.load(tmp_path / "a" / "small_data.npy")
    small_labels = np.load(tmp_path / "a" / "small_labels.npy")
    assert small.shape == (40, data.shape[1]) and small.dtype == data.dtype
    rows = [int(np.flatnonzero((data == row).all(axis=1))[0]) for row in small]
    assert len(set(rows)) == 40  # no row drawn twice
    assert np.array_equal(small_labels, labels[rows])
    assert (tmp_path / "a" / "small_data.npy").read_bytes() == \
        (tmp_path / "b" / "small_data.npy").read_bytes()  # --seed reproduces the sample
    with pytest.raises(SystemExit) as exc:
        main(["sample", str(seed_toy / "toy_data.npy"), str(seed_toy / "toy_labels.npy"),
              "-s", "101", "-dir", str(tmp_path)])
    assert exc.value.code == 2


def test_demo_runs_offline(tmp_path, empty_keras_home, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(["demo", "-dir", str(tmp_path)]) == 0
    rows = list(csv.reader(open(tmp_path / "demo.csv", encoding="utf-8")))
    assert len(rows) == 25 and {row[0] for row in rows[1:]} == {"circles", "squares"}
    values = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    assert values.max() > 0.1  # the bundled ImageNet weights, not random ones (~1e-20)


@pytest.mark.parametrize("args, message", [
    (["--local-cluster", "0"], "at least 1 worker"),
    (["-weights", ""], "weights option is empty"),
])
def test_more_bad_settings_exit_2(args, message, tmp_path, seed_toy, capsys):
    pytest.importorskip("distributed")
    with pytest.raises(SystemExit) as exc:
        main(["-csv", str(seed_toy / "toy_table.csv"), "-tm", "MobileNet", *args, "-dir",
              str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


CHATTER = ("absl::InitializeLog", "I0000", "E0000", "W0000", "cuInit", "oneDNN custom",
           "cpu_feature_guard", "XNNPACK delegate")


def test_demo_prints_no_tensorflow_chatter(tmp_path):
    proc = run_cli("demo", "-dir", str(tmp_path / "demo"),
                   env={"TRANSFEREMBED_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    for text in CHATTER:
        assert text not in proc.stderr, proc.stderr
    assert "Converting MobileNet to TFLite fp32" in proc.stderr  # the first run's stage
    assert (tmp_path / "demo" / "demo.csv").is_file()
    assert (tmp_path / "demo" / "demo_images.npy").is_file()
    # it says what it is doing while TensorFlow loads, and the bar moves batch by batch
    assert "Loading TensorFlow and MobileNet" in proc.stderr
    states = proc.stderr.replace("\r", "\n")
    assert all(f"| {n}/24 [" in states for n in (8, 16, 24)), states
    rates = [float(v) if unit == "it/s" else 1 / float(v)
             for v, unit in re.findall(r"([\d.]+)(it/s|s/it)", states)]
    assert rates and max(rates) < 500, states  # not "16095 it/s" from the last batch alone
    assert f"Wrote {(tmp_path / 'demo' / 'demo.csv').resolve()}" in proc.stdout


def test_verbose_shows_tensorflow_messages(tmp_path):
    proc = run_cli("demo", "-dir", str(tmp_path / "demo"), "--verbose",
                   env={"TRANSFEREMBED_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert any(text in proc.stderr for text in CHATTER), proc.stderr


def test_a_blank_path_cell_is_skipped_not_fatal(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / name)
    table = tmp_path / "list.csv"
    table.write_text("ok,a.png\nscratches,\nok,b.png\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["-csv", str(table), "-tm", "MobileNet", "--alpha", "0.25", "-weights",
                 "None", "--input-size", "32", "-dir", str(out), "-n", "run", "-q"]) == 0
    assert np.load(out / "run_data.npy").shape == (2, 256)
    skipped = list(csv.DictReader(open(out / "run_skipped.csv", encoding="utf-8")))
    assert skipped == [{"path": "list.csv, line 2", "reason": "no image path in this row"}]
    assert "list.csv, line 2: no image path in this row" in capsys.readouterr().err
