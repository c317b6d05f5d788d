"""Build semnorm and its compiled extension ``semnorm._C``.

The C++ CPU kernels are always compiled (OpenMP). The CUDA kernels in ``csrc/cuda`` are compiled
when torch was built with CUDA and a CUDA toolkit is found; otherwise the build says why and
skips them. ``SEMNORM_SKIP_EXT=1`` installs the pure-PyTorch package with no extension at all.
Install with ``pip install --no-build-isolation .`` so that the extension is compiled against the
torch that will run it.
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
PACKAGES = ["semnorm", "semnorm.ops", "semnorm.nn", "semnorm.triton", "semnorm.models", "semnorm.training"]
PACKAGE_DIR = {
    "semnorm": "semnorm",
    "semnorm.ops": "semnorm/ops",
    "semnorm.nn": "semnorm/nn",
    "semnorm.models": "models",
    "semnorm.training": "training",
}


def _log(msg: str) -> None:
    print(f"semnorm setup: {msg}", file=sys.stderr)


def _extensions():
    if os.environ.get("SEMNORM_SKIP_EXT", "0") == "1":
        _log("SEMNORM_SKIP_EXT=1: installing the pure-PyTorch path, no compiled extension")
        return [], {}

    # /usr/local/bin/nvcc is often a wrapper script; torch would then guess CUDA_HOME=/usr/local and
    # fail to link cudart. torch.utils.cpp_extension reads CUDA_HOME at import, so set it first.
    if not os.environ.get("CUDA_HOME") and os.path.isfile("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"

    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        sys.exit(
            "semnorm setup: torch is not importable. Install torch first, then run "
            "`pip install --no-build-isolation .` (or set SEMNORM_SKIP_EXT=1 for the pure-PyTorch path)."
        )

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    cxx_flags = ["-O3", "-fopenmp"]
    define_macros = [("Py_LIMITED_API", "0x030A0000")]

    with_cuda, reason = False, ""
    if os.environ.get("SEMNORM_SKIP_CUDA", "0") == "1":
        reason = "SEMNORM_SKIP_CUDA=1"
    elif torch.version.cuda is None:
        reason = f"torch {torch.__version__} was built without CUDA"
    elif CUDA_HOME is None:
        reason = "no CUDA toolkit found (set CUDA_HOME)"
    elif not cuda_sources:
        reason = "no CUDA sources in csrc/cuda"
    else:
        with_cuda = True

    kwargs = dict(
        name="semnorm._C",
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        py_limited_api=True,
        extra_link_args=["-fopenmp"],
    )
    if with_cuda:
        # Without a visible GPU torch cannot detect the arch list and raises; Hopper is what we run on.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        _log(f"compiling C++ and CUDA kernels (arch {os.environ['TORCH_CUDA_ARCH_LIST']}, CUDA_HOME={CUDA_HOME})")
        ext = CUDAExtension(
            sources=sources + cuda_sources,
            extra_compile_args={"cxx": cxx_flags + ["-DSEMNORM_WITH_CUDA"], "nvcc": ["-O3", "-DSEMNORM_WITH_CUDA"]},
            **kwargs,
        )
    else:
        _log(f"compiling C++ CPU kernels only; CUDA kernels skipped: {reason}")
        ext = CppExtension(sources=sources, extra_compile_args={"cxx": cxx_flags}, **kwargs)
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=True)}
    return [ext], cmdclass


ext_modules, cmdclass = _extensions()

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {},
)
