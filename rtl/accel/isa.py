"""The chip's command set: the layouts of its commands, its responses and the instructions of each unit.

The chip is driven like a decoupled access/execute machine (VTA, Gemmini): the host sends a stream of commands;
the controller checks each one and hands it to the queue of the unit that executes it (fetcher, a lane of the MLP
engine, a score sequencer, the weight loader) or executes it itself (memory, split, barrier, counters). Units hand
data to each other through streams whose order both ends follow, and wait on each other through completion
counters (``wait_*`` fields, modulo 256), so a query's whole program (every stage, every sub-batch) is sent up front
and runs with no host step. docs/chip.md has the command table; :mod:`rpaccel.host.driver.chip` is the only place
that encodes commands and decodes responses.

Every layout is built from an :class:`~rpaccel.config.AccelConfig` by :class:`ChipGeometry`, so the RTL, the host
driver and the fast model share one definition.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

from ...config import AccelConfig
from ...embedding import EmbeddingGeometry, ceil_log2
from ...numeric import ACC_BITS, M_BITS, S_BITS
from ..embedding import Layouts
from ..interaction import MODES
from ..mlp import COUNT_BITS, WAIT_BITS, EngineGeometry, MLPCommand
from ..topk import DEFAULT_INDEX_BITS, k_bits

__all__ = ["INDEX_BITS", "MAX_PER_RANGE", "TAG_BITS", "ActSource", "ChipGeometry", "Counter", "ErrorCode",
           "FetchSource", "Opcode", "OutDest", "ResponseKind", "ScoreDest", "survivors_address_layout"]

#: Width of a candidate index (a candidate set holds at most 2**16 candidates).
INDEX_BITS = DEFAULT_INDEX_BITS
#: Width of the tag a command carries and its responses repeat.
TAG_BITS = 8


class Opcode(enum.Enum, shape=4):
    """Command opcodes (the table in docs/chip.md says what each waits on and answers)."""

    NOP = 0         # nothing; answers nothing (a filler)
    SYNC = 1        # wait until every unit is idle; answer DONE
    MEM_WRITE = 2   # write one memory line (after every earlier command has finished)
    MEM_READ = 3    # read lines; answer DATA per line
    SPLIT = 4       # set the array split (once the lanes are idle)
    WEIGHTS = 5     # copy weight words from memory into the weight buffer (weight loader)
    EMB = 6         # an embedding unit command other than LOOKUP (through the fetcher, in order)
    FETCH = 7       # fetch a sub-batch of candidates: dense words to a lane, lookups, a join job
    LANE = 8        # one MLP engine command for a lane (INPUT or LAYER) with its routing
    SCORE = 9       # take a lane's logits to a top-k unit or to the response stream
    COUNTERS = 10   # answer every counter (after every earlier command has finished); optionally clear


class ResponseKind(enum.Enum, shape=3):
    """What a response word carries."""

    DONE = 0      # a SYNC completed
    DATA = 1      # one memory line of a MEM_READ
    RANK = 2      # one (score, index) of a top-k result, best first
    LOGIT = 3     # one (score, index) of a SCORE to the response stream, in item order
    COUNTER = 4   # one counter (``index`` names it, ``score`` holds its low 32 bits)
    ERROR = 5     # a refused command: ``code`` says why, ``index`` the opcode, ``score`` a detail
    KEPT = 6      # one index of a filter result, in arrival order (``score`` zero)


class ErrorCode(enum.Enum, shape=4):
    """Why a command was refused (an ERROR response; the command has no effect)."""

    NONE = 0
    OPCODE = 1       # unknown opcode
    LANE = 2         # lane not active in the current split
    SPLIT = 3        # split not one of the configuration's splits
    K = 4            # k is 0 or above K_MAX
    ITEMS = 5        # 0 items, or more than the buffers hold
    UNIT = 6         # no such top-k unit
    WEIGHTS = 7      # weight range outside the buffer, or a layer's weights not loaded
    TABLE = 8        # embedding table out of range, or a fetch needing a table not configured
    INDEX = 9        # candidate index outside the candidate set
    ADDRESS = 10     # memory address outside memory
    FIELD = 11       # a field out of its range (mode, vectors, dimension, source)


class FetchSource(enum.Enum, shape=2):
    """Where a FETCH takes its candidates' indices."""

    RANGE = 0       # first, first + 1, ..., first + items - 1
    SURVIVORS = 1   # positions first .. first + items - 1 of a top-k unit's kept result
    LIST = 2        # 16-bit indices in memory from line ``list_addr`` (checked against ``count``)


class ActSource(enum.Enum, shape=1):
    """Where a lane's INPUT command takes its words."""

    DENSE = 0      # the fetcher's dense words for the lane
    INTERACT = 1   # the interaction unit's output for the lane


class OutDest(enum.Enum, shape=1):
    """Where a lane's output layer (``to_output``) sends its results."""

    JOIN = 0    # the joiner (a bottom MLP's output, joined with the pooled vectors)
    SCORE = 1   # the lane's score sequencer (a top MLP's logits)


class ScoreDest(enum.Enum, shape=2):
    """Where a SCORE sends its logits."""

    TOPK = 0     # a top-k unit (the running top-k of a query, sorted; k up to K_MAX)
    RSP = 1      # the response stream, one LOGIT each (baseline mode: the host sorts)
    FILTER = 2   # a filter unit (the k best as a set, in arrival order; k up to filter_capacity)


class Counter(enum.Enum, shape=8):
    """The chip's counters (32 bits each): COUNTERS answers one COUNTER response per member, ``index`` its value.

    Busy counters count the cycles in which the unit holds work (an instruction started and not finished, or data
    in its pipeline). ``EMB_*`` are the embedding unit's own (:data:`rpaccel.cachemodel.COUNTERS`, without its
    ``cycles``); ``MEM_*`` count lines through the memory port. ``BUSY_LANE0 + l`` is lane ``l``'s, ``BUSY_TOPK0 + u``
    top-k unit ``u``'s, ``BUSY_FILTER0 + f`` filter unit ``f``'s (COUNTERS answers those of the configuration's
    lanes and units only); each range holds :data:`MAX_PER_RANGE` (the ``paper`` preset's split into 64 lanes).
    """

    CYCLES = 0
    COMMANDS = 1
    ERRORS = 2
    BUSY_FETCH = 3
    BUSY_EMBEDDING = 4
    BUSY_JOIN = 5
    BUSY_INTERACTION = 6
    BUSY_WEIGHTS = 7
    EMB_LOOKUPS = 8
    EMB_STATIC_HITS = 9
    EMB_LINE_HITS = 10
    EMB_LINE_MISSES = 11
    EMB_EVICTIONS = 12
    EMB_RANGE_ERRORS = 13
    EMB_MEM_LINES = 14
    MEM_READ_LINES = 15
    MEM_WRITE_LINES = 16
    BUSY_LANE0 = 64
    BUSY_TOPK0 = 128
    BUSY_FILTER0 = 192


#: Lanes, top-k units or filter units whose busy counters a range of :class:`Counter` holds.
MAX_PER_RANGE = 64


class ChipGeometry:
    """Every size of the chip's command set and units, derived from a configuration.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig

    Attributes
    ----------
    engine : rpaccel.rtl.mlp.EngineGeometry
    emb : rpaccel.embedding.EmbeddingGeometry
    emb_layouts : rpaccel.rtl.embedding.Layouts
    lanes : int
        Lanes of the MLP engine (the largest split).
    rows : int
        ``array_rows``: elements of an activation word on chip (dense words, interaction words).
    line_bytes, addr_bits : int
        The memory's line size and line-address width.
    units : int
        Top-k units.
    filters : int
        Filter units.
    holders : int
        Units whose kept results a FETCH reads (``SURVIVORS``): top-k unit ``u`` is holder ``u``, filter unit ``f``
        holder ``units + f``.
    """

    def __init__(self, config):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"Chip configuration must be an AccelConfig, not {config!r}")
        self.config = config
        self.engine = EngineGeometry(config)
        self.emb = EmbeddingGeometry.from_config(config)
        self.emb_layouts = Layouts(self.emb)
        self.lanes = self.engine.lanes
        for what, count in (("lanes", self.engine.lanes), ("topk_units", config.topk_units),
                            ("filter_units", config.filter_units)):
            if count > MAX_PER_RANGE:
                raise ValueError(f"The chip's counters hold busy counters of {MAX_PER_RANGE} {what}, not {count}")
        self.rows = config.array_rows
        self.line_bytes = self.emb.line_bytes
        self.addr_bits = self.emb.addr_bits
        self.units = config.topk_units
        self.k_max = config.k_max
        self.filters = config.filter_units
        self.filter_capacity = config.filter_capacity
        #: Units whose kept results a FETCH can read: the top-k units, then the filter units.
        self.holders = self.units + self.filters
        self.max_vectors = config.max_tables + 1
        self.max_dim = config.max_emb_dim

    @property
    def lookup_entry_bits(self):
        """Width of one lookup entry of a candidate record: 32 bits if ``{id, table, last, end}`` fits, else 64."""
        need = self.emb.id_bits + ceil_log2(max(self.emb.tables, 2)) + 2
        return 32 if need <= 32 else 64

    def lookup_entry_layout(self):
        """``{id, table, last, end}`` at the low end of a lookup entry (the rest of the entry is zero)."""
        return data.StructLayout({"id": unsigned(self.emb.id_bits), "table": range(max(self.emb.tables, 2)),
                                  "last": 1, "end": 1})

    def join_params_layout(self):
        """The interaction of a sub-batch: mode, vectors ``F`` (bottom output and ``F - 1`` pooled), dimension
        ``d``, requantisation ``(m, s)`` of the ``dot`` products."""
        return data.StructLayout({"mode": range(len(MODES)), "vectors": range(self.max_vectors + 1),
                                  "dim": range(self.max_dim + 1), "m": unsigned(M_BITS), "s": unsigned(S_BITS)})

    def fetch_layout(self):
        """The FETCH command (the fetcher's instruction).

        ``lane``: where the dense words, the indices and the join job go. ``source``, ``first``, ``list_addr``:
        the candidates (:class:`FetchSource`); ``unit``, ``wait_results``, ``release``: for ``SURVIVORS``, the
        top-k unit, the number of its kept results that must be complete (the result read is the
        ``wait_results``-th, modulo 256) and whether this fetch is the last to read it. ``items``: candidates in
        the sub-batch. The candidate set: ``base`` (line of record 0), ``stride`` (lines per record), ``count``
        (candidates), ``dense_lines`` (lines of dense bytes at the start of a record), ``dense_words`` (words of
        ``rows`` elements the lane is sent per item). ``join``: the sub-batch's interaction.
        """
        return data.StructLayout({
            "lane": range(max(self.lanes, 2)),
            "source": FetchSource,
            "first": unsigned(INDEX_BITS),
            "list_addr": unsigned(self.addr_bits),
            "unit": range(max(self.holders, 2)),
            "wait_results": unsigned(WAIT_BITS),
            "release": 1,
            "items": unsigned(COUNT_BITS),
            "base": unsigned(self.addr_bits),
            "stride": unsigned(16),
            "count": unsigned(INDEX_BITS + 1),
            "dense_lines": unsigned(8),
            "dense_words": unsigned(8),
            "join": self.join_params_layout(),
        })

    def join_job_layout(self):
        """What the fetcher tells the joiner per FETCH: ``{lane, items, params}``."""
        return data.StructLayout({"lane": range(max(self.lanes, 2)), "items": unsigned(COUNT_BITS),
                                  "params": self.join_params_layout()})

    def fetcher_instr_layout(self):
        """The fetcher's instruction: ``{tag, emb, arg}``, ``arg.fetch`` a FETCH or (``emb``) ``arg.emb`` an
        embedding unit command."""
        return data.StructLayout({"tag": unsigned(TAG_BITS), "emb": 1, "arg": data.UnionLayout({
            "fetch": self.fetch_layout(), "emb": self.emb_layouts.command})})

    def score_instr_layout(self):
        """A score sequencer's instruction: ``{tag, score}``."""
        return data.StructLayout({"tag": unsigned(TAG_BITS), "score": self.score_layout()})

    def act_word_layout(self):
        """A word of ``rows`` int8 elements: the dense and interaction words on chip."""
        return data.ArrayLayout(signed(8), self.rows)

    def lane_layout(self):
        """The LANE command: one :class:`~rpaccel.rtl.mlp.MLPCommand` for ``lane`` and how to route its data.

        ``wait_weights``: hold the command until the weight loader has completed this many WEIGHTS commands
        (modulo 256). INPUT: ``src`` (:class:`ActSource`) and ``src_words``, the words of ``rows`` elements each
        item comes in (the lane keeps the first ``cmd.ktiles`` words of its own width). LAYER with
        ``cmd.to_output``: ``dst`` (:class:`OutDest`).
        """
        return data.StructLayout({"lane": range(max(self.lanes, 2)), "wait_weights": unsigned(WAIT_BITS),
                                  "src": ActSource, "src_words": unsigned(8), "dst": OutDest, "cmd": MLPCommand})

    def score_layout(self):
        """The SCORE command: take ``items`` logits (column 0 of the lane's output words) and their candidate
        indices from ``lane``. ``dest`` TOPK or FILTER: into top-k unit or filter unit ``unit``, closing the query if
        ``last`` (with ``k``); then, if ``keep``, the result is kept for FETCH (the holder's next result number) and,
        if ``report``, sent as RANK responses (a top-k unit's, best first) or KEPT responses (a filter's, in arrival
        order). ``dest`` RSP: one LOGIT response each (``last`` on the final one if ``last``)."""
        return data.StructLayout({"lane": range(max(self.lanes, 2)), "dest": ScoreDest,
                                  "unit": range(max(self.units, self.filters, 2)), "items": unsigned(COUNT_BITS),
                                  "last": 1, "k": unsigned(self.k_bits), "keep": 1, "report": 1})

    @property
    def k_bits(self):
        """Width of a SCORE's ``k``: the largest k of a top-k or a filter unit fits, and so do some bad values."""
        return k_bits(max(self.k_max, self.filter_capacity))

    def holder_positions(self, holder):
        """Places of a kept result of ``holder`` (``k_max`` for a top-k unit, ``filter_capacity`` for a filter)."""
        return self.k_max if holder < self.units else self.filter_capacity

    def weights_layout(self):
        """The WEIGHTS command: ``words`` weight words from memory line ``mem_addr`` (packed, ``array_cols`` bytes
        each) to the weight buffer from ``w_addr``; if ``wait``, first until lane ``lane`` has completed
        ``wait_layers`` layers (so a streamed layer does not overwrite weights still in use)."""
        return data.StructLayout({"mem_addr": unsigned(self.addr_bits), "w_addr": unsigned(16),
                                  "words": unsigned(17), "wait": 1, "lane": range(max(self.lanes, 2)),
                                  "wait_layers": unsigned(WAIT_BITS)})

    def command_layout(self):
        """``{op, tag, arg}``: one command (``arg`` a union by opcode)."""
        line = unsigned(8 * self.line_bytes)
        return data.StructLayout({
            "op": Opcode,
            "tag": unsigned(TAG_BITS),
            "arg": data.UnionLayout({
                "mem_write": data.StructLayout({"addr": unsigned(self.addr_bits), "data": line}),
                "mem_read": data.StructLayout({"addr": unsigned(self.addr_bits), "length": unsigned(16)}),
                "split": data.StructLayout({"n": unsigned(8)}),
                "weights": self.weights_layout(),
                "emb": self.emb_layouts.command,
                "fetch": self.fetch_layout(),
                "lane": self.lane_layout(),
                "score": self.score_layout(),
                "counters": data.StructLayout({"clear": 1}),
            }),
        })

    def response_layout(self):
        """``{kind, tag, last, code, index, score, data}``: one response (see :class:`ResponseKind`)."""
        return data.StructLayout({
            "kind": ResponseKind,
            "tag": unsigned(TAG_BITS),
            "last": 1,
            "code": ErrorCode,
            "index": unsigned(INDEX_BITS),
            "score": signed(ACC_BITS),
            "data": unsigned(8 * self.line_bytes),
        })


def survivors_address_layout(geometry):
    """``{unit, bank, position}``: an address of the survivors buffers, the kept results a FETCH from ``SURVIVORS``
    reads. ``unit`` is a holder (top-k units, then filter units); result ``r`` of a holder, counted from 1, is in
    bank ``r % 2``; ``position`` counts from a top-k result's best candidate, or in a filter result's order."""
    positions = max(geometry.k_max, geometry.filter_capacity)
    return data.StructLayout({"unit": range(max(geometry.holders, 2)), "bank": 1, "position": range(positions)})
