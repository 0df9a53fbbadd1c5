"""Build the two small C helpers of the capture layer: the record walk, and the one-pass
decode of the common Ethernet/IPv4/TCP|UDP packet (capture.fastpath).

Both are optional: if one cannot be compiled, natlens falls back to pure Python / numpy
(slower, same results); the walk says so once.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "natlens.capture._walk",
            sources=["lib/natlens/capture/_walk.c"],
            optional=True,
        ),
        Extension(
            "natlens.capture._ipv4",
            sources=["lib/natlens/capture/_ipv4.c"],
            optional=True,
        ),
    ]
)
