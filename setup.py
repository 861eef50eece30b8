#!/usr/bin/env python
"""Orange3-TransferEmbed: image embeddings from ImageNet-pretrained CNNs for Orange."""

import json
import posixpath
import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).resolve().parent
NAME = "Orange3-TransferEmbed"
#: The version, read from the package so that it is written in one place only.
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    (HERE / "orangecontrib/transferembed/__init__.py").read_text(encoding="utf-8"),
                    re.M).group(1)
URL = "https://github.com/orange3-transferembed/orange3-transferembed"
DOCS_URL = "https://orange3-transferembed.readthedocs.io/en/latest/"

ENTRY_POINTS = {
    # Orange's add-on dialog lists distributions that declare this entry point.
    "orange3.addon": ("transferembed = orangecontrib.transferembed",),
    # The widget category and its widgets.
    "orange.widgets": ("Transfer Embed = orangecontrib.transferembed.widgets",),
    # Help pages reached with F1.
    "orange.canvas.help": ("html-index = orangecontrib.transferembed.widgets:WIDGET_HELP_PATH",),
    # Example workflows on the welcome screen.
    "orange.widgets.tutorials": ("transferembed = orangecontrib.transferembed.tutorials",),
    "console_scripts": ("transferembed = orangecontrib.transferembed.cli.main:main",),
}

INSTALL_REQUIRES = [
    "Orange3>=3.36",
    "orange-widget-base>=4.22",
    "AnyQt>=0.2",
    "tensorflow>=2.16",
    "keras>=3",
    "numpy>=1.24",
    "Pillow>=10",
    "scikit-learn>=1.2",
    "matplotlib>=3.5",
    "tqdm>=4.60",
    "platformdirs>=3",
    # TensorFlow's own dependency, held back: ml_dtypes 0.7.0 registers its numpy
    # loops in about 1 s under the GIL, which freezes Orange's window while
    # TensorFlow loads (0.6.0: 5 ms; doc/performance.md, "Orange's window").
    "ml_dtypes<0.7",
    # LiteRT's interpreter for the converted models: TensorFlow 2.20+ schedules
    # tf.lite.Interpreter for deletion in its favour. Measured the same speed and bit for
    # bit the same output (doc/performance.md, "LiteRT"); small (no TensorFlow inside);
    # wheels for Linux, Windows and Apple-silicon macs (Intel macs: tf.lite, as before).
    'ai-edge-litert>=2.0; platform_system != "Darwin" or platform_machine == "arm64"',
]

DOC_REQUIRE = ["sphinx>=7", "myst-parser>=2"]
DASK_REQUIRE = ["dask[distributed]>=2024.1"]
#: Images, CSVs and shards by URL (s3://, gs://, az://, https://) through fsspec's back-ends.
CLOUD_REQUIRE = ["fsspec>=2024.2", "s3fs>=2024.2", "gcsfs>=2024.2", "adlfs>=2024.2",
                 "aiohttp>=3.9"]
#: A faster int8 runtime on CPUs without VNNI (doc/performance.md); optional.
OPENVINO_REQUIRE = ["openvino>=2024.0"]
#: The foundation encoders (DINOv2, SigLIP 2, SigLIP, CLIP; doc/foundation.md), an extra
#: and not the base install, decided by trying keras-hub 0.32: it needs Python 3.11+
#: (the add-on supports 3.10), and its tensorflow-text (all platforms but Windows) pins
#: TensorFlow's minor version and has no wheels for Intel macs.
FOUNDATION_REQUIRE = ['keras-hub>=0.32; python_version >= "3.11"']

EXTRAS_REQUIRE = {
    "dask": DASK_REQUIRE,
    "cloud": CLOUD_REQUIRE,
    "qt": ["PyQt6>=6.5"],
    # The add-on tests build the help and a wheel (offline, without build isolation);
    # the cluster tests need the dask extra, the runtime tests the openvino one, the
    # cloud tests s3fs and moto's S3 server (which they start on 127.0.0.1).
    "openvino": OPENVINO_REQUIRE,
    "foundation": FOUNDATION_REQUIRE,
    "test": ["pytest>=7", "PyQt6>=6.5", "ruff>=0.6,<1", "build", "setuptools>=61", "wheel",
             "markdown>=3", *DOC_REQUIRE, *DASK_REQUIRE, *OPENVINO_REQUIRE, *FOUNDATION_REQUIRE,
             "fsspec>=2024.2", "s3fs>=2024.2", "moto[server]>=5",
             # the real Import Images widget feeds both widgets in their tests
             "orange3-imageanalytics>=0.12"],
    "doc": DOC_REQUIRE,
}

CLASSIFIERS = [
    "Development Status :: 4 - Beta",
    "Environment :: X11 Applications :: Qt",
    "Environment :: Console",
    "Environment :: Plugins",
    "Intended Audience :: Education",
    "Intended Audience :: Science/Research",
    "Operating System :: OS Independent",
    "Programming Language :: Python :: 3",
    "Programming Language :: Python :: 3 :: Only",
    "Programming Language :: Python :: 3.10",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
    "Topic :: Scientific/Engineering :: Image Recognition",
    "Topic :: Scientific/Engineering :: Visualization",
]

PROJECT_URLS = {
    "Documentation": DOCS_URL,
    "Source": URL,
    "Bug Tracker": URL + "/issues",
}

#: The widgets' help, rendered from their Markdown pages on every build, and where it is
#: installed (under ``sysconfig.get_path("data")``), which ``WIDGET_HELP_PATH`` names.
HELP_PAGES = "doc/widgets.json"
HELP_SOURCE = "doc/_help"
HELP_TARGET = "help/orange3-transferembed"
HELP_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: sans-serif; max-width: 52em; margin: 1em auto; padding: 0 1em;
line-height: 1.45; }} img {{ max-width: 100%; }} code {{ background: #f3f3f3; }}</style>
</head><body>
{body}
</body></html>
"""


#: Pages of the documentation that the widgets' help links to, installed beside it, so
#: that those links work offline (where they matter most: weights without internet).
HELP_EXTRA_PAGES = ("offline-weights.md",)
_LINK = r'href="([\w./-]+)\.md(#[\w-]+)?"'


def _linker(folder: str):
    """Links from a page in ``folder`` to other pages: local where the help carries
    the page, else online."""
    def link(match) -> str:
        page = posixpath.normpath(posixpath.join(folder, match.group(1)))
        anchor = match.group(2) or ""
        if page + ".md" in HELP_EXTRA_PAGES:
            return f'href="{posixpath.relpath(page, folder or ".")}.html{anchor}"'
        return f'href="{DOCS_URL}{page}.html{anchor}"'
    return link


def _render_page(source: Path, page: Path, title: str, folder: str) -> str:
    """One Markdown page as a help page; its HTML body."""
    import markdown

    body = markdown.markdown(source.read_text(encoding="utf-8"),
                             extensions=["tables", "fenced_code"])
    body = re.sub(_LINK, _linker(folder), body)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(HELP_PAGE.format(title=title, body=body), encoding="utf-8")
    return body


def render_help(out: Path = HERE / HELP_SOURCE) -> list[Path]:
    """Render the widgets' help pages and their index (Orange's F1 finds a widget
    in the index by its name); the files written. Needs Python-Markdown."""
    import shutil

    import markdown  # noqa: F401 - missing: no help (help_data_files)

    categories = json.loads((HERE / HELP_PAGES).read_text(encoding="utf-8"))
    links, written = [], []
    for name in HELP_EXTRA_PAGES:
        page = out / Path(name).with_suffix(".html")
        _render_page(HERE / "doc" / name, page, Path(name).stem.replace("-", " ").title(), "")
        written.append(page)
    for _category, widgets in categories:
        for widget in widgets:
            source = HERE / "doc" / widget["doc"]
            page = out / Path(widget["doc"]).with_suffix(".html")
            body = _render_page(source, page, widget["text"],
                                posixpath.dirname(widget["doc"]))
            written.append(page)
            for image in re.findall(r'src="([^"]+)"', body):
                found = (source.parent / image).resolve()
                if found.is_file() and HERE in found.parents:
                    target = (page.parent / image).resolve()
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(found, target)
                    written.append(target)
            links.append(f'<li><a href="{page.relative_to(out).as_posix()}">'
                         f'{widget["text"]}</a></li>')
    index = out / "index.html"
    index.write_text(HELP_PAGE.format(title=NAME, body=f'<h1>{NAME}</h1>\n<div id="widgets">'
                                      f'<ul>{"".join(links)}</ul></div>'), encoding="utf-8")
    return [index, *written]


def help_data_files() -> list[tuple[str, list[str]]]:
    """``data_files`` for the help, rendered now; none where Markdown is missing."""
    try:
        files = render_help()
    except ImportError:
        print("warning: Python-Markdown is missing: the widgets' help is not included")
        return []
    folders: dict[str, list[str]] = {}
    for path in files:
        inside = path.parent.relative_to(HERE / HELP_SOURCE).as_posix()
        folder = posixpath.normpath(posixpath.join(HELP_TARGET, inside))
        folders.setdefault(folder, []).append(path.relative_to(HERE).as_posix())
    return sorted((folder, sorted(set(names))) for folder, names in folders.items())


if __name__ == "__main__":
    setup(
        name=NAME,
        version=VERSION,
        description="Image embeddings from ImageNet-pretrained CNNs (Keras) for Orange "
                    "and the command line",
        long_description=(HERE / "README.md").read_text(encoding="utf-8"),
        long_description_content_type="text/markdown",
        author="The Orange3-TransferEmbed developers",
        url=URL,
        project_urls=PROJECT_URLS,
        license="MIT",
        license_files=["LICENSE"],
        keywords=["orange3 add-on", "image embedding", "transfer learning", "keras",
                  "tensorflow", "imagenet", "cnn"],
        classifiers=CLASSIFIERS,
        packages=find_namespace_packages(include=["orangecontrib.*"], exclude=["*.__pycache__"]),
        package_data={
            "orangecontrib.transferembed.widgets": ["icons/*.svg", "icons/*.png"],
            # the workflows, and the drawn shapes they open (a folder and a npy pair)
            "orangecontrib.transferembed.tutorials": ["*.ows", "*.npy", "shapes/*/*.png"],
            # MobileNet 0.25's ImageNet weights (Apache-2.0), with their licence and sha256
            "orangecontrib.transferembed.models": ["bundled/*.h5", "bundled/*.sha256",
                                                   "bundled/*.txt"],
        },
        data_files=help_data_files(),
        include_package_data=True,
        python_requires=">=3.10",
        install_requires=INSTALL_REQUIRES,
        extras_require=EXTRAS_REQUIRE,
        entry_points=ENTRY_POINTS,
        zip_safe=False,
    )
