"""Build of vgic: the Python package in vgic/, the Cython kernels in _core/.

The kernels are installed as the subpackage ``vgic._core``.  Cython resolves
``cimport vgic._core.x`` by file path, so the ``.pyx``/``.pxd`` sources are
mirrored into ``build/cython-src/vgic/_core/`` and compiled from there.
"""
import os
import shutil

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = "_core"
MIRROR = os.path.join("build", "cython-src")
MIRROR_PKG = os.path.join(MIRROR, "vgic", "_core")

# Each kernel module of _core/ (a .pyx) becomes vgic._core.<name>.
MODULES = sorted(f[:-4] for f in os.listdir(os.path.join(HERE, CORE)) if f.endswith(".pyx"))


def mirror_sources() -> None:
    os.makedirs(MIRROR_PKG, exist_ok=True)
    for pkg in (os.path.join(MIRROR, "vgic"), MIRROR_PKG):
        open(os.path.join(pkg, "__init__.py"), "a").close()
    for name in os.listdir(os.path.join(HERE, CORE)):
        if name.endswith((".pyx", ".pxd")):
            src = os.path.join(HERE, CORE, name)
            dst = os.path.join(MIRROR_PKG, name)
            # Copy only when changed so incremental builds stay incremental.
            if not os.path.exists(dst) or open(src, "rb").read() != open(dst, "rb").read():
                shutil.copyfile(src, dst)


mirror_sources()

extensions = [
    Extension(f"vgic._core.{name}", [os.path.join(MIRROR_PKG, name + ".pyx")],
              extra_compile_args=["-O2"])
    for name in MODULES
]

setup(
    packages=["vgic", "vgic._pure", "vgic._core"],
    package_dir={"vgic": "vgic", "vgic._core": CORE},
    package_data={"vgic": ["py.typed", "*.pyi"], "vgic._core": ["*.pyi", "*.pxd"]},
    ext_modules=cythonize(
        extensions,
        include_path=[MIRROR],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
    zip_safe=False,
)
