"""Build hook for the optional C accelerator; metadata lives in pyproject.toml.

The extension is optional: where no compiler is available the install still
succeeds and tracker falls back to the pure-Python un-escaper (slower, same
output), logging once that it did so.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tracker._unescape", ["tracker/_unescape.c", "tracker/_textformat.c"], optional=True),
    ],
)
