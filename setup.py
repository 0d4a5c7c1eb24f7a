"""Builds the optional CPU scoring kernel (an XLA FFI handler and a host-array call: salax/native_metrics.py).

Everything else about the package is in pyproject.toml. The kernel compiles against the XLA FFI headers
that jaxlib ships (a build requirement). It is optional: where no C++20 compiler is found the install
still succeeds, and salax.metrics scores with its pure-JAX code.
"""

import os
import platform

from setuptools import Extension, setup


def _xla_ffi_include_dir() -> str:
    import jaxlib

    return os.path.join(os.path.dirname(jaxlib.__file__), "include")


# The kernel's eight-lane vector code wants 256-bit registers: on x86 it is built for AVX2 (and refuses
# to load on older CPUs, where the JAX code scores instead); elsewhere for the compiler's default target.
_VECTOR_FLAGS = ["-mavx2"] if platform.machine().lower() in ("x86_64", "amd64") else []

setup(ext_modules=[Extension(
    "salax._aim_scores",
    sources=["salax/_aim_scores.cc"],
    include_dirs=[_xla_ffi_include_dir()],
    language="c++",
    # No FMA contraction: a value must round alike wherever it is computed (AUC-Judd ties).
    extra_compile_args=["-std=c++20", "-O3", "-fopenmp-simd", "-ffp-contract=off",
                        "-fvisibility=hidden", *_VECTOR_FLAGS],
    extra_link_args=["-pthread"],
    optional=True,
)])
