"""Entry of the ``cdiqa`` element for GStreamer's Python plugin loader (gst-python).

The loader imports every ``python/*.py`` under GST_PLUGIN_PATH in the interpreter GStreamer
embeds (the system Python) and registers ``__gstelementfactory__``. ``CDIQA_GST_SITE`` (set
by ``eval "$(python -m cdiqa.gst)"``) names the site-packages of the Python where cdiqa is
installed; they are added as site directories, so their ``.pth`` files (an editable install)
count too. The element itself is ``cdiqa.gst.element``.
"""

import os
import site
import sys

for _path in filter(None, os.environ.get("CDIQA_GST_SITE", "").split(os.pathsep)):
    if _path not in sys.path:
        site.addsitedir(_path)

from cdiqa.gst.element import factory  # noqa: E402

__gstelementfactory__ = factory()
