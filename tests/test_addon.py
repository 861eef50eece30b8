"""The add-on as Orange sees it: the built wheel, the Add-ons dialog, widget
discovery through the entry points, the example workflows and the help index.

The docs and the wheel are built once per session, from a copy of the source
tree (so the checkout gets no ``build/`` folder), with no network.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIST_NAME = "Orange3-TransferEmbed"
CATEGORY = "Transfer Embed"
WIDGET_NAME = "Transfer Embedding"
WIDGET = "orangecontrib.transferembed.widgets.owtransferembedding.OWTransferEmbedding"
COMPARE = "orangecontrib.transferembed.widgets.owcomparebackbones.OWCompareBackbones"
TUTORIALS = ROOT / "orangecontrib" / "transferembed" / "tutorials"
WORKFLOWS = sorted(TUTORIALS.glob("*.ows"))
HELP_DIR = "help/orange3-transferembed"
#: The workflow of the original tool's README, done in Orange.
MAIN_WORKFLOW_WIDGETS = {WIDGET_NAME, "Neural Network", "Test and Score"}


def _source_files(root: Path) -> list[str]:
    """The files of a clean checkout plus new, not ignored ones (or all, outside git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=root, check=True,
                             capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                and not {"build", "_build", "__pycache__"} & set(p.parts)]
    return [name for name in out.decode().split("\0") if name and (root / name).is_file()]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict:
    """The sdist, and a wheel built from it, once, from a copy of the tree with no
    documentation built beforehand (as a plain ``pip wheel``/``python -m build`` makes)."""
    tmp = tmp_path_factory.mktemp("addon-build")
    src = tmp / "src"
    for name in _source_files(ROOT):
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o",
                    str(dist)], cwd=src, check=True, env=env, capture_output=True)
    sdists = list(dist.glob("*.tar.gz"))
    assert len(sdists) == 1, sdists
    unpacked = tmp / "unpacked"
    with tarfile.open(sdists[0]) as archive:
        archive.extractall(unpacked, filter="data")
    (root,) = unpacked.iterdir()
    shutil.rmtree(root / "doc" / "_help")  # the wheel renders the help again
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                    "--no-build-isolation", "--no-index", "-q", "-w", str(dist)],
                   cwd=root, check=True, env=env)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    with tarfile.open(sdists[0]) as archive:
        sdist_names = archive.getnames()
    return {"src": src, "wheel": wheels[0], "sdist": sdist_names}


@pytest.fixture(scope="session")
def wheel_names(built) -> list[str]:
    with zipfile.ZipFile(built["wheel"]) as archive:
        return archive.namelist()


@pytest.fixture(scope="session")
def wheel_metadata(built) -> email.message.Message:
    with zipfile.ZipFile(built["wheel"]) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(name))


@pytest.fixture(scope="session")
def qapp():
    from AnyQt.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


@pytest.fixture(scope="session")
def registry(qapp):
    """Orange's widget registry, filled the way Orange fills it at start-up."""
    from Orange.canvas.config import Config
    from orangecanvas.registry import WidgetRegistry
    from orangewidget.workflow.discovery import WidgetDiscovery

    registry = WidgetRegistry()
    WidgetDiscovery(registry).run(Config.widgets_entry_points())
    return registry


# --- the wheel -------------------------------------------------------------

def test_wheel_is_a_namespace_add_on(wheel_names):
    assert "orangecontrib/__init__.py" not in wheel_names
    assert "orangecontrib/transferembed/__init__.py" in wheel_names
    assert "orangecontrib/transferembed/widgets/owtransferembedding.py" in wheel_names
    icons = [n for n in wheel_names if n.startswith("orangecontrib/transferembed/widgets/icons/")]
    assert any(n.endswith(".svg") for n in icons), icons
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in wheel_names)


def test_wheel_holds_workflows_and_help(wheel_names):
    from orangecontrib.transferembed import __version__

    assert WORKFLOWS, "no example workflows in the tutorials package"
    for ows in WORKFLOWS:
        assert f"orangecontrib/transferembed/tutorials/{ows.name}" in wheel_names
    # the help, installed under sysconfig's "data" path (the name's case depends on
    # the setuptools version)
    data = f"orange3_transferembed-{__version__}.data/data/{HELP_DIR}/"
    help_files = {n.lower() for n in wheel_names if n.lower().startswith(data)}
    for page in ("index.html", "widgets/transfer-embedding.html",
                 "widgets/compare-backbones.html", "widgets/images/transfer-embedding.png",
                 "offline-weights.html"):
        assert data + page in help_files, page


def test_sdist_carries_the_help(built):
    names = {name.split("/", 1)[1] for name in built["sdist"] if "/" in name}
    for page in ("doc/_help/index.html", "doc/_help/widgets/transfer-embedding.html",
                 "doc/_help/widgets/compare-backbones.html", "doc/widgets/compare-backbones.md"):
        assert page in names, page


BUNDLED = ("mobilenet_2_5_224_tf_no_top.h5", "mobilenet_2_5_224_tf_no_top.h5.sha256",
           "LICENSE-mobilenet_2_5_224_tf_no_top.txt")


def test_wheel_and_sdist_carry_the_bundled_weights_and_licence(built, wheel_names):
    """MobileNet 0.25's weights ship in both, with their licence and sha256 beside them."""
    folder = "orangecontrib/transferembed/models/bundled/"
    sdist = {name.split("/", 1)[1] for name in built["sdist"] if "/" in name}
    for name in BUNDLED:
        assert folder + name in wheel_names, name
        assert folder + name in sdist, name
    with zipfile.ZipFile(built["wheel"]) as archive:
        assert archive.getinfo(folder + BUNDLED[0]).file_size == 2108140


def test_wheel_metadata(wheel_metadata, built):
    from orangecontrib.transferembed import __version__

    meta = wheel_metadata
    assert meta["Name"] == DIST_NAME
    assert meta["Version"] == __version__
    assert "orange3 add-on" in meta["Keywords"].split(",")
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip().startswith("#")  # the README
    assert meta["License-File"] == "LICENSE"
    assert meta.get_all("Project-URL")
    assert any(c.startswith("Topic :: Scientific") for c in meta.get_all("Classifier"))
    requires = " ".join(meta.get_all("Requires-Dist"))
    for name in ("Orange3", "tensorflow", "Pillow"):
        assert name in requires
    with zipfile.ZipFile(built["wheel"]) as archive:
        eps = archive.read(next(n for n in archive.namelist()
                                if n.endswith("entry_points.txt"))).decode()
    for line in ("[orange3.addon]", "[orange.widgets]",
                 "Transfer Embed = orangecontrib.transferembed.widgets",
                 "html-index = orangecontrib.transferembed.widgets:WIDGET_HELP_PATH",
                 "transferembed = orangecontrib.transferembed.tutorials",
                 "transferembed = orangecontrib.transferembed.cli.main:main"):
        assert line in eps


# --- the Add-ons dialog ----------------------------------------------------

def drop_report(wheel: str) -> dict:
    """Drop ``wheel`` on Orange's Add-ons dialog as a file manager does, with
    a real ``QDropEvent``, and say what the dialog then plans to do."""
    from AnyQt.QtCore import QMimeData, QPointF, Qt, QUrl
    from AnyQt.QtGui import QDropEvent
    from AnyQt.QtWidgets import QApplication
    from Orange.canvas.config import Config
    from orangecanvas.application.addons import AddonManagerDialog

    app = QApplication.instance() or QApplication([])  # noqa: F841
    dialog = AddonManagerDialog()
    dialog.setConfig(Config())
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(wheel)])
    event = QDropEvent(QPointF(0, 0), Qt.DropAction.CopyAction, data,
                       Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                       QDropEvent.Type.Drop)
    dialog.dropEvent(event)
    report = {"accepted": event.isAccepted(), "state": [
        {"action": action.name, "item": type(item).__name__,
         "name": item.installable.name, "version": item.installable.version,
         "summary": item.installable.summary, "package_url": item.installable.package_url,
         "force": item.installable.force}
        for action, item in dialog.itemState()]}
    dialog.deleteLater()
    return report


def _fresh_site(tmp: Path) -> Path:
    """This environment's site-packages, as symlinks, without this add-on: a
    Python started with ``-S`` and it on ``PYTHONPATH`` is a fresh Orange."""
    site = Path(sysconfig.get_path("purelib"))
    fresh = tmp / "fresh-site-packages"
    fresh.mkdir()
    for entry in site.iterdir():
        if "transferembed" not in entry.name.lower() and entry.suffix != ".pth":
            (fresh / entry.name).symlink_to(entry)
    return fresh


def _check_drop(report: dict, wheel_metadata, action: str, item: str) -> None:
    assert report["accepted"]
    assert len(report["state"]) == 1, report
    step = report["state"][0]
    assert (step["action"], step["item"]) == (action, item)
    assert step["name"] == "Orange3-TransferEmbed"
    assert step["version"] == wheel_metadata["Version"]
    assert step["summary"] == wheel_metadata["Summary"]
    assert step["force"]


def test_addons_dialog_installs_dropped_wheel(built, wheel_metadata, tmp_path):
    """On an Orange without the add-on, the drop is an Install of it."""
    code = ("import json, sys; from test_addon import drop_report; "
            "print(json.dumps(drop_report(sys.argv[1])))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join([str(_fresh_site(tmp_path)), str(ROOT / "tests")]),
               QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(built["wheel"])], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    _check_drop(report, wheel_metadata, "Install", "Available")
    assert report["state"][0]["package_url"] == str(built["wheel"])


def test_addons_dialog_reinstalls_dropped_wheel_here(qapp, built, wheel_metadata):
    """Where the add-on is installed (as in development), the drop upgrades it."""
    report = drop_report(str(built["wheel"]))
    if _installed():
        _check_drop(report, wheel_metadata, "Upgrade", "Installed")
    else:
        _check_drop(report, wheel_metadata, "Install", "Available")


def _installed() -> bool:
    try:
        return distribution(DIST_NAME) is not None
    except PackageNotFoundError:
        return False


# --- discovery, workflows and help ----------------------------------------

def test_entry_points_are_installed():
    groups = {group: [ep for ep in entry_points(group=group)
                      if ep.dist is not None and ep.dist.name == DIST_NAME]
              for group in ("orange3.addon", "orange.widgets", "orange.canvas.help",
                            "orange.widgets.tutorials", "console_scripts")}
    for group, eps in groups.items():
        assert eps, f"no {group} entry point; is the package installed (pip install -e .)?"
    assert groups["orange.widgets"][0].name == CATEGORY
    assert groups["orange.widgets.tutorials"][0].load().__name__ == \
        "orangecontrib.transferembed.tutorials"


def test_discovery_registers_widget_in_its_category(registry):
    category = registry.category(CATEGORY)
    assert category.project_name == DIST_NAME
    widgets = registry.widgets(CATEGORY)
    assert [w.qualified_name for w in widgets] == [WIDGET, COMPARE]  # by priority
    compare = registry.widget(COMPARE)
    assert compare.name == "Compare Backbones" and compare.category == CATEGORY
    assert [o.name for o in compare.outputs] == ["Embeddings", "Scores"]
    desc = registry.widget(WIDGET)
    assert desc.name == WIDGET_NAME
    assert desc.category == CATEGORY
    assert desc.project_name == DIST_NAME
    assert [i.name for i in desc.inputs] == ["Images"]
    assert {"Embeddings", "Skipped Images"} <= {o.name for o in desc.outputs}
    assert desc.icon and desc.icon.endswith(".svg")


def test_example_workflows_are_registered():
    from Orange.canvas.config import Config
    from orangecanvas.application.examples import workflows

    ours = [w for w in workflows(Config())
            if w.package is not None and w.package.__name__.startswith("orangecontrib.transfer")]
    assert sorted(Path(w.abspath()).name for w in ours) == [p.name for p in WORKFLOWS]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_opens_with_every_node_and_link(registry, path):
    from orangecanvas.scheme import Scheme
    from orangecanvas.scheme.readwrite import loads, parse_ows_stream, scheme_load

    with open(path, "rb") as stream:
        desc = parse_ows_stream(stream)
    with open(path, "rb") as stream:
        scheme = scheme_load(Scheme(), stream, registry)  # raises on any bad node or link
    assert scheme.title and scheme.description
    assert len(scheme.nodes) == len(desc.nodes)
    assert len(scheme.links) == len(desc.links)
    for node in desc.nodes:  # every widget exists, under the project that ships it
        widget = registry.widget(node.qualified_name)
        assert widget.name == node.name
        assert (widget.project_name or "") == (node.project_name or "")
        if node.data is not None:
            assert isinstance(loads(node.data.data, node.data.format), dict)
    by_id = {node.id: registry.widget(node.qualified_name) for node in desc.nodes}
    for link in desc.links:  # ids and names both match the real channels
        outputs = {o.id: o.name for o in by_id[link.source_node_id].outputs}
        inputs = {i.id: i.name for i in by_id[link.sink_node_id].inputs}
        assert outputs.get(link.source_channel_id) == link.source_channel
        assert inputs.get(link.sink_channel_id) == link.sink_channel
    names = {node.description.name for node in scheme.nodes}
    assert names & {WIDGET_NAME, "Compare Backbones"}


def test_main_workflow_is_the_original_readme_done_in_orange(registry):
    from orangecanvas.scheme import Scheme
    from orangecanvas.scheme.readwrite import scheme_load

    found = []
    for path in WORKFLOWS:
        with open(path, "rb") as stream:
            scheme = scheme_load(Scheme(), stream, registry)
        names = {node.description.name for node in scheme.nodes}
        edges = {(link.source_node.description.name, link.sink_node.description.name)
                 for link in scheme.links}
        if MAIN_WORKFLOW_WIDGETS <= names and {
                (WIDGET_NAME, "Neural Network"), (WIDGET_NAME, "Test and Score"),
                ("Neural Network", "Test and Score")} <= edges:
            found.append(path.name)
    assert found


def _help_locations(data_dir: str) -> list[str]:
    """``WIDGET_HELP_PATH`` as Orange's help manager formats it."""
    from orangecontrib.transferembed.widgets import WIDGET_HELP_PATH

    fields = {"DEVELOP_ROOT": str(ROOT), "DATA_DIR": data_dir, "PROJECT_NAME": DIST_NAME,
              "PROJECT_NAME_LOWER": DIST_NAME.lower()}
    return [target.format(**fields) for target, _xpath in WIDGET_HELP_PATH]


def test_help_path_order():
    """The development build, then the installed help, then the online docs."""
    first, installed, online = _help_locations(sysconfig.get_path("data"))
    assert Path(first) == ROOT / "doc" / "_build" / "html" / "index.html"
    assert Path(installed) == Path(sysconfig.get_path("data")) / HELP_DIR / "index.html"
    assert online.startswith("https://")


def test_f1_finds_the_help_of_a_plain_install(registry, built, tmp_path, monkeypatch):
    """Orange's own lookup (HelpManager, the ``orange.canvas.help`` entry point, the
    provider's search) finds a local page in what the wheel installs, offline."""
    import orangecanvas.help.manager as manager
    from orangecanvas.help.manager import HelpManager

    prefix = tmp_path / "prefix"
    with zipfile.ZipFile(built["wheel"]) as archive:
        for name in archive.namelist():
            head, _, rest = name.partition(".data/data/")
            if rest:
                target = prefix / rest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    monkeypatch.setattr(manager, "get_path", lambda name: str(prefix))
    monkeypatch.setattr(manager, "develop_root", lambda dist: None)  # a plain install
    help_manager = HelpManager()
    help_manager.set_registry(registry)
    for widget, page in ((WIDGET, "transfer-embedding.html"),
                         (COMPARE, "compare-backbones.html")):
        url = help_manager.search({"id": widget})
        found = Path(url.toLocalFile())
        assert url.isLocalFile() and found.is_file(), url.toString()
        assert found == prefix / HELP_DIR / "widgets" / page
        text = found.read_text(encoding="utf-8")
        assert "Inputs" in text and "Outputs" in text
