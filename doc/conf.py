"""Sphinx configuration: Markdown pages through myst-parser.

Build with ``python -m sphinx -W -b html doc doc/_build/html``. The index page
has a "Widgets" section whose links Orange's help (F1) looks up by widget name,
so ``setup.py`` installs the built pages under ``help/orange3-transferembed``.
"""

import datetime

from orangecontrib.transferembed import __version__

project = "Orange3-TransferEmbed"
author = "The Orange3-TransferEmbed developers"
copyright = f"{datetime.date.today().year}, {author}"  # noqa: A001
release = version = __version__

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "requirements.txt"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "Orange3-TransferEmbed"
html_show_sourcelink = False
html_theme_options = {"description": "Image embeddings from ImageNet-pretrained CNNs",
                      "fixed_sidebar": True}
