#!/usr/bin/env python
"""Orange3-TransferEmbed: image embeddings from ImageNet-pretrained CNNs for Orange."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent
NAME = "Orange3-TransferEmbed"
VERSION = "0.1.0"

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

EXTRAS_REQUIRE = {
    "dask": ["dask[distributed]>=2024.1"],
    "qt": ["PyQt6>=6.5"],
    "test": ["pytest>=7", "PyQt6>=6.5", "ruff"],
    "doc": ["sphinx>=7", "myst-parser>=2"],
}

if __name__ == "__main__":
    setup(
        name=NAME,
        version=VERSION,
        description="Image embeddings from ImageNet-pretrained CNNs (Keras) for Orange "
                    "and the command line",
        long_description=(HERE / "README.md").read_text(encoding="utf-8"),
        long_description_content_type="text/markdown",
        license="MIT",
        license_files=["LICENSE"],
        keywords=["orange3 add-on", "image embedding", "transfer learning", "keras",
                  "tensorflow", "imagenet", "cnn"],
        packages=find_namespace_packages(include=["orangecontrib.*"]),
        package_data={
            "orangecontrib.transferembed.widgets": ["icons/*.svg", "icons/*.png"],
            "orangecontrib.transferembed.tutorials": ["*.ows"],
        },
        include_package_data=True,
        python_requires=">=3.10",
        install_requires=INSTALL_REQUIRES,
        extras_require=EXTRAS_REQUIRE,
        entry_points=ENTRY_POINTS,
        zip_safe=False,
    )
