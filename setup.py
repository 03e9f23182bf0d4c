"""Builds the C sampling kernels (batching/_sampling.c); the rest is in pyproject.toml.

The kernels are a plain shared library that batching/kernels.py loads with ctypes (no Python
API), compiled for the baseline x86-64 with AVX2 and AVX-512 variants picked at run time.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "batching._sampling",
            sources=["batching/_sampling.c", "batching/_parallel.c", "batching/_pool.c"],
            depends=["batching/_sampling.h", "batching/_pool.h"],
            extra_compile_args=[
                "-O3",
                "-std=c11",
                "-fno-wrapv",  # Python builds with -fwrapv, which stops the loops vectorising
                "-fno-trapping-math",
                "-fno-math-errno",
                "-pthread",
            ],
            extra_link_args=["-pthread"],
        )
    ]
)
