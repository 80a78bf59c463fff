"""Host runtime of rpaccel (``rpaccel.host``): models, data, training, the int8 reference and ranking quality.

:mod:`~rpaccel.host.models` (the model zoo), :mod:`~rpaccel.host.data` (synthetic and Criteo-format data),
:mod:`~rpaccel.host.train` (float training in numpy), :mod:`~rpaccel.host.quant` (int8 quantisation),
:mod:`~rpaccel.host.reference` (the integer reference model, the RTL's specification) and
:mod:`~rpaccel.host.quality` (NDCG, AUC, multi-stage pipelines). See ``docs/host.md``.
"""
