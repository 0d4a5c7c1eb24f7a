"""Builds the optional CPU scoring kernel salax.metrics._aim_scores (sources: salax/metrics/csrc/).

Everything else about the package is in pyproject.toml. The kernel compiles against the XLA FFI headers
that jaxlib ships (a build requirement). It is optional: where no C++20 compiler is found the install
still succeeds, and salax.metrics scores with its pure-JAX code.

On x86 the kernel is built for AVX2 and FMA (it then refuses to load on older CPUs, where the JAX code
scores); SALAX_AVX2=0 builds the portable vector code instead, which is what other CPUs (ARM) always get.
"""

import glob
import os
import platform

from setuptools import Extension, setup


def _xla_ffi_include_dir() -> str:
    import jaxlib

    return os.path.join(os.path.dirname(jaxlib.__file__), "include")


def _vector_flags() -> list[str]:
    """-mavx2 -mfma on x86 unless SALAX_AVX2=0 (FMA: std::fma, which the exact resize needs, inlines);
    elsewhere the compiler's default target."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    wanted = os.environ.get("SALAX_AVX2", "1").strip().lower() not in ("0", "false", "no", "off")
    return ["-mavx2", "-mfma"] if x86 and wanted else []


setup(ext_modules=[Extension(
    "salax.metrics._aim_scores",
    sources=["salax/metrics/csrc/bindings.cc"],
    depends=sorted(glob.glob("salax/metrics/csrc/*.h")),
    include_dirs=[_xla_ffi_include_dir()],
    language="c++",
    # No FMA contraction: a value must round alike wherever it is computed (AUC-Judd ties).
    extra_compile_args=["-std=c++20", "-O3", "-fopenmp-simd", "-ffp-contract=off",
                        "-fvisibility=hidden", *_vector_flags()],
    extra_link_args=["-pthread"],
    optional=True,
)])
