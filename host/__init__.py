"""Host runtime of rpaccel (``rpaccel.host``): models, data, queries, schedulers, backends and reports."""
