"""Configurations the tests share beyond the presets.

``SMALL16`` is the ``small`` preset as it was before the chip's resize (a 16 x 8 array split 1, 2 or 4 ways, 64-byte
embedding rows, the larger buffers): the block tests that check geometry, splits and timing-driven structure at
that size keep it, so the blocks stay verified at the size their figures in docs/results.md were measured at.
"""

from dataclasses import replace

from rpaccel.config import preset

__all__ = ["SMALL16"]

SMALL16 = replace(preset("small"), name="small16", array_rows=16, array_cols=8, splits=(1, 2, 4), array_dsp_pes=124,
                  weight_buffer_words=24576, act_buffer_words=4096, max_emb_dim=64, dyn_cache_sets=1024,
                  join_buffer_words=2048, emb_requant_lanes=16, acc_buffer_words=64,
                  clock_mhz=125.0)
