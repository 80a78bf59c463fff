"""``bench sched``'s checks before it measures anything (the measurement itself runs the chip: see the bench)."""

import pytest

from rpaccel.config import preset
from rpaccel.experiments import ExperimentError
from rpaccel.experiments.sched import run_sched


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "nope"}, "unknown model 'nope'"), ({"sizes": "gauss:1"}, "Unknown size distribution"),
    ({"target_ms": 0}, "must be positive"), ({"cores": 0}, "cores must be a positive integer"),
    ({"accel_sizes": (64, 16)}, "accel_sizes must be two or more increasing"),
    ({"device": "fpga"}, "device must be one of rtl, model, not 'fpga'"),
])
def test_bad_settings_are_refused_before_measuring(kwargs, message):
    with pytest.raises(ExperimentError, match=message):
        run_sched(preset("small"), **kwargs)
