"""Transfer Embed
==============

Widgets that turn images into feature vectors with ImageNet-pretrained CNNs.
Importing this package is cheap: TensorFlow is imported only when an
embedding runs.
"""

import os
import sys

NAME = "Transfer Embed"
DESCRIPTION = "Image embeddings from ImageNet-pretrained CNNs (keras.applications)."
BACKGROUND = "#A8D8B9"
ICON = "icons/category.svg"
PRIORITY = 1010

# Help pages for F1, in the order Orange tries them: a development build of
# the documentation, the installed copy, then the online one.
WIDGET_HELP_PATH = (
    (os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "doc",
                                   "_build", "html", "index.html")), None),
    (os.path.join(sys.prefix, "help", "orange3-transferembed", "index.html"),
     None),
    ("https://orange3-transferembed.readthedocs.io/en/latest/", ""),
)
