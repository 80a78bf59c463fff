"""The experiments behind ``rpaccel bench`` and ``rpaccel demo``: keyword-argument functions that return reports.

Each experiment takes an :class:`~rpaccel.config.AccelConfig` (where it builds or simulates hardware) and keyword
arguments, checks them (:class:`ExperimentError` names the parameter at fault), runs, and returns a
:class:`Report`: the measured rows, the text a user reads, the sections of ``docs/results.md`` it fills, a JSON-able
dict, and the checks that failed. Nothing here parses arguments, prints or writes the results file; the command
line (:mod:`rpaccel.cli`) does that::

    from rpaccel.config import preset
    from rpaccel.experiments.gemm import run_gemm
    report = run_gemm(preset("small"), models=["rm-small"], batches=[16], splits=[1])
    assert report.passed
    print(report.text)

One module per command:

* :mod:`.blocks`: ``run_blocks`` (``bench blocks``), ``run_scoreboards``;
* :mod:`.synth`: ``run_synth`` (``bench synth``), ``synthesize_config`` (the others' synthesis);
* :mod:`.gemm`: ``run_gemm``, ``run_gemm_synth`` (``bench gemm``);
* :mod:`.embedding`: ``run_embedding``, ``run_embedding_synth`` (``bench embedding``);
* :mod:`.topk`: ``run_topk`` (``bench topk``);
* :mod:`.chip`: ``run_chip`` (``bench chip``);
* :mod:`.quality`: ``run_quality`` (``bench quality``);
* :mod:`.accel`: ``run_accel`` (``bench accel``), ``measure`` (also ``demo``);
* :mod:`.demo`: ``run_demo`` (``demo``).
"""

from .report import ExperimentError, ExperimentFailed, Report, Section, combine

__all__ = ["ExperimentError", "ExperimentFailed", "Report", "Section", "combine"]
