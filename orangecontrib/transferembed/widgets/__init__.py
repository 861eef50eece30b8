"""Transfer Embed
==============

Widgets that turn images into feature vectors with ImageNet-pretrained CNNs.
Importing this package is cheap: TensorFlow is imported only when an
embedding runs.
"""

NAME = "Transfer Embed"
DESCRIPTION = "Image embeddings from ImageNet-pretrained CNNs (keras.applications)."
BACKGROUND = "#A8D8B9"
ICON = "icons/category.svg"
PRIORITY = 1010

# Help pages for F1, in the order Orange tries them (it fills in the fields): a
# development build of the documentation, the pages every wheel installs (setup.py
# renders them from doc/widgets/*.md), then the online documentation.
WIDGET_HELP_PATH = (
    ("{DEVELOP_ROOT}/doc/_build/html/index.html", None),
    ("{DATA_DIR}/help/orange3-transferembed/index.html", None),
    ("https://orange3-transferembed.readthedocs.io/en/latest/", ""),
)
