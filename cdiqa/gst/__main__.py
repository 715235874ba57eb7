"""``eval "$(python -m cdiqa.gst)"``: shell exports that let GStreamer programs load the
``cdiqa`` element (``cdiqa.gst.environment``)."""

import shlex

from cdiqa.gst import environment

for key, value in environment().items():
    print(f"export {key}={shlex.quote(value)}")
