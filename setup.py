"""Build the one small C helper of the capture layer (the record walk).

The extension is optional: if it cannot be compiled, natlens falls back to a
pure-Python walk and says so once (slower, same results).
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "natlens.capture._walk",
            sources=["lib/natlens/capture/_walk.c"],
            optional=True,
        )
    ]
)
