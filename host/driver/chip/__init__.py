"""The chip's host driver: the one place that encodes the chip's commands and decodes its responses (docs/chip.md).

* :mod:`~rpaccel.host.driver.chip.encoding`: :class:`ChipEncoder` (one method per opcode, fields checked),
  :func:`decode_commands`, :func:`decode_responses` and :class:`Responses` (rankings, logits, counters, errors as
  :class:`ChipError`).
* :mod:`~rpaccel.host.driver.chip.memory`: what the host stages in the chip's memory (:class:`MemoryImage`):
  candidate records, index lists, weight images, embedding tables.
* :mod:`~rpaccel.host.driver.chip.program`: models loaded on a chip (:class:`ChipSetup`), pipelines of
  :class:`Stage` s compiled into programs (:func:`compile_queries`, rpaccel and baseline :class:`Schedule` s) and
  their golden answers (:func:`expected_responses`).
* :mod:`~rpaccel.host.driver.chip.checker`: :func:`check_program`, the static checker run before a program is sent.

Example::

    setup = ChipSetup(config, [rm_small, rm_large])
    query = setup.add_query({rm_small: rm_small.inputs(records), rm_large: rm_large.inputs(records)})
    program = compile_queries(setup, [Stage(rm_small, k=512), Stage(rm_large, k=64)], [query],
                              Schedule("rpaccel", split=2, sub_batch=32))
    check_program(setup.geometry, program.records(), memory=setup.memory)
    words = np.concatenate([setup.load_words(), program.words()])
    expected = expected_responses(program)          # expected.rankings[0]: [(score, index), ...]
"""

from .checker import ProgramError, check_program
from .encoding import (
    ChipCommandError,
    ChipEncoder,
    ChipError,
    Responses,
    decode_commands,
    decode_responses,
    encode_responses,
)
from .memory import (
    MemoryImage,
    RecordSet,
    decode_list,
    decode_records,
    encode_list,
    encode_records,
    list_lines,
    stage_weights,
    table_dim,
    table_rows,
)
from .program import (
    ChipSetup,
    CompileError,
    Expected,
    Program,
    Query,
    Schedule,
    Stage,
    Step,
    chip_logits,
    chip_mlps,
    compile_queries,
    expected_responses,
)

__all__ = ["ChipCommandError", "ChipEncoder", "ChipError", "ChipSetup", "CompileError", "Expected", "MemoryImage",
           "Program", "ProgramError", "Query", "RecordSet", "Responses", "Schedule", "Stage", "Step",
           "check_program", "chip_logits", "chip_mlps", "compile_queries", "decode_commands", "decode_list",
           "decode_records", "decode_responses", "encode_list", "encode_records", "encode_responses",
           "expected_responses", "list_lines", "stage_weights", "table_dim", "table_rows"]
