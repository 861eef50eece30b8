#!/usr/bin/env python
"""Orange3-TransferEmbed: image embeddings from ImageNet-pretrained CNNs for Orange."""

import os
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
    "console_scripts": ("transferembed = orangecontrib.transferembed.cli:main",),
}

INSTALL_REQUIRES = [
    "Orange3>=3.36",
    "orange-widget-base>=4.22",
    "AnyQt>=0.2",
    "tensorflow>=2.16",
    "keras>=3",
    "numpy>=1.24",
    "Pillow>=10",
    "tqdm>=4.60",
    "platformdirs>=3",
]

DOC_REQUIRE = ["sphinx>=7", "myst-parser>=2"]
DASK_REQUIRE = ["dask[distributed]>=2024.1"]

EXTRAS_REQUIRE = {
    "dask": DASK_REQUIRE,
    "qt": ["PyQt6>=6.5"],
    # The add-on tests build the help and a wheel (offline, without build isolation);
    # the cluster tests need the dask extra.
    "test": ["pytest>=7", "PyQt6>=6.5", "ruff", "build", "setuptools>=61", "wheel",
             *DOC_REQUIRE, *DASK_REQUIRE],
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

#: Where the built help lands, under ``sysconfig.get_path("data")``; the
#: widget's ``WIDGET_HELP_PATH`` looks for ``index.html`` there.
HELP_SOURCE = "doc/_build/html"
HELP_TARGET = "help/orange3-transferembed"


def help_data_files(local_dir: str = HELP_SOURCE, install_dir: str = HELP_TARGET):
    """``data_files`` entries for the built HTML help, if it was built
    (``python -m sphinx -b html doc doc/_build/html``); none otherwise."""
    files = []
    for dirpath, dirs, names in os.walk(HERE / local_dir):
        dirs.sort()
        rel = os.path.relpath(dirpath, HERE)
        visible = sorted(n for n in names if not n.startswith("."))
        if visible:
            target = install_dir + rel[len(local_dir):].replace(os.sep, "/")
            files.append((target, [os.path.join(rel, n).replace(os.sep, "/")
                                   for n in visible]))
    return sorted(files)


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
            "orangecontrib.transferembed.tutorials": ["*.ows"],
        },
        data_files=help_data_files(),
        include_package_data=True,
        python_requires=">=3.10",
        install_requires=INSTALL_REQUIRES,
        extras_require=EXTRAS_REQUIRE,
        entry_points=ENTRY_POINTS,
        zip_safe=False,
    )
