"""rpaccel: an open, cycle-level implementation of RPAccel, RecPipe's recommendation-inference accelerator.

Subpackages: :mod:`rpaccel.rtl` (Amaranth gateware), :mod:`rpaccel.sim` (simulation harness, golden models,
benches), :mod:`rpaccel.host` (host runtime). Shared by all three: :mod:`rpaccel.config` (the configuration
dataclass and presets) and :mod:`rpaccel.numeric` (the numeric rules).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rpaccel")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
