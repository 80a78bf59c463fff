"""Package discovery for the one distribution whose subpackages live in top-level folders.

``rtl/``, ``sim/``, ``host/`` and ``constraints/`` are the subpackages ``rpaccel.rtl``, ``rpaccel.sim``,
``rpaccel.host`` and ``rpaccel.constraints``; setuptools finds every package below each root, so a new
subpackage needs no entry here.
"""

from setuptools import find_packages, setup

ROOTS = {"rpaccel": "rpaccel", "rpaccel.rtl": "rtl", "rpaccel.sim": "sim", "rpaccel.host": "host",
         "rpaccel.constraints": "constraints"}

packages = list(ROOTS)
packages += [f"{name}.{sub}" for name, folder in ROOTS.items() for sub in find_packages(folder)]
setup(package_dir=ROOTS, packages=packages)
