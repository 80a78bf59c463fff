"""Cycle-exact timing model of the interaction unit (:class:`rpaccel.rtl.interaction.Interaction`) on its own.

:meth:`InteractionModel.run` takes the unit's input words as :func:`~rpaccel.host.driver.interaction.encode_items`
makes them (batches of several modes, shapes and ``(m, s)`` concatenated), the not-before cycle of each word (idle
gaps allowed) and the output's ``ready`` in every cycle (always ready by default), and returns the cycle each input
word is accepted, the output words (values by :func:`rpaccel.sim.golden.interaction.interaction_model`, the
golden model) and the cycle each leaves. Cycles are the :class:`~rpaccel.sim.player.Player`'s: cycle 0 is the
first cycle out of reset, a transfer counts in the cycle whose closing edge sees ``valid`` and ``ready``, and an
input word is offered from its not-before cycle, never before the cycle after the word ahead of it was taken.

Timing rules, each with the RTL mechanism it comes from ("item ``i``" counts the items with vectors; an *op* is
one sequencer issue; an *entry* one result queue entry):

1. **Loader and banks** (``_Loader``: ``i.ready = ~full[wb]``, ``wb`` toggling per item). Item ``i`` loads into
   bank ``i % 2``, which is free from the cycle after the sequencer released item ``i - 2`` (``release`` clears
   ``full`` at the edge). Word ``k`` is accepted in ``A[k] = max(not_before[k], A[k - 1] + 1, gate)``, the gate
   being ``R[i - 2] + 1`` on an item's first word (``R``: the cycle of an item's last op) and nothing on the
   others (the bank cannot fill under its own item). An empty item (``vectors = 0`` or ``dim = 0``, which the
   driver refuses) is one word, accepted under the gate of the next item's bank and dropped.
2. **Sequencer start** (``full`` set at the edge closing the item's last word, ``rb`` toggling at the edge
   closing the last op). Item ``i``'s first op is issued no earlier than ``S[i] = max(L[i] + 1, R[i - 1] + 1)``,
   ``L[i]`` the cycle its last word was accepted; its ops then issue one a cycle (:func:`op_schedule`:
   ``item_cycles`` ops, a push op per entry, ``last`` on the final one), except for rule 3.
3. **Credits** (``CreditCounter(32)``, ``room`` registered from the count the cycle's ``take`` and ``give``
   make). Every op, pushing or not, needs ``room``: an op issued in ``t`` after ``E`` push ops (counted over the
   whole run) needs entry ``E - 32`` to have been read by the packer in ``t - 1`` or earlier.
4. **Datapath and queue** (``_Datapath``: ``6 + PostProcessor.LATENCY = 13`` stages; the read-registered
   ``Queue``: a write reaches the head register two cycles later). The entry of a push op issued in ``t`` is
   written in ``t + 13`` and can be read by the packer from ``t + ISSUE_TO_READ = t + 15`` (and never before
   the cycle after the entry ahead of it was read).
5. **Packer** (``_Packer``: ``i.ready = free & ~flush``, ``free = ~out_valid | o.ready``, the output word in a
   register). The packer acts at most once a cycle, only when ``free``: it reads an entry (one that completes a
   word, or ends an item, *emits* that word) or, after an item's last entry that overflowed its word (fill plus
   count above ``lanes``), flushes the rest as a word of its own (one cycle, no entry read). An emitted word is
   offered from the next cycle and leaves in the first cycle from then with ``ready``; the packer's next action
   is not before that cycle (it is not ``free`` while the word waits). After an action that emits nothing the
   next is not before the next cycle. Which entries emit is a property of the item's shape
   (:func:`op_schedule`), the packer's fill returning to zero at every item's end.

How it runs fast: the loop is per item, never per cycle. With the output always ready an item is in closed form,
in scalars, while the packer keeps up: its ops issue in ``S .. S + ops - 1``; its packer action ``e`` (its entries,
then the flush) is in ``max(P + e, S + 15 + op[e])``, ``P`` the packer's first free cycle (rule 5 with one action a
cycle; ``op[e] - e`` never decreases), so the packer is next free in ``max(P + entries, S + 15 + ops) + flush``
and the item's words leave in ``max(P + action, S + 15 + op) + 1``, one numpy expression over a run of such items.
Such an item waits for no credit if ``P - S <= SETTLED = 31`` and the 32 entries before it were each read at most
31 cycles after its op: entry ``E - 32`` is then read by ``issue(E - 32) + 31``, and the op after ``E`` pushes
issues at least 32 ops after ``issue(E - 32)``. The run's leading items (up to an empty one) go all at once: rules 1
and 2 over them are the max-plus recurrences ``accepted[i] = max(alone[i], accepted[i - 1] + words[i], R[i - 2] +
words[i])`` (``alone[i]`` the bound of the item's own not-before cycles) and ``R[i] = max(accepted[i], R[i - 1]) +
ops[i]``, iterated from below to their fixed point in numpy
(a round per change of what binds along the run), ``P`` a running maximum; from the first whose packer lags, the
loop per item takes over. Any other item (the packer lagging: items that each flush, back-pressure) goes alone, on
one of two guesses checked in numpy, the one that held for the item before first: no op waits for a credit its own
item owes (its ops bounded by the reads of the entries before it, its reads by rule 5); or the packer sets the pace
(every entry is in the queue before the packer comes to it, so the reads are the packer's chain alone and the ops
follow from the credits). If neither holds, in blocks of 32 entries, each block's ops bounded by the reads of the
block before. With a ``ready`` pattern the packer goes word by word (a loop per output word, closed forms between
words): an emitted word leaves in the next ready cycle, looked up in a table of the pattern.

Not modelled: random idle cycles on the input (the Player's input ``pause``); idle input is given as not-before
cycles.
"""

from dataclasses import dataclass
from functools import cache

import numpy as np

from ...host.driver.codec import codec
from ...host.driver.interaction import check_item_params, output_width
from ...rtl.interaction import DEFAULT_PAIR_LANES, MODES, interaction_in_layout, interaction_out_layout
from ...rtl.postproc import PostProcessor
from ..golden.interaction import interaction_model

__all__ = ["DATAPATH_LATENCY", "ISSUE_TO_READ", "QUEUE_DEPTH", "SETTLED", "InteractionModel", "InteractionRun",
           "OpSchedule", "op_schedule"]

#: Cycles from an op's issue to its entry's write into the result queue: the block RAM read, the operands'
#: register, partial products, products, sums of four, the accumulator, the requantiser.
DATAPATH_LATENCY = 6 + PostProcessor.LATENCY
#: Cycles from an op's issue to the packer's first chance to read its entry (the read-registered queue's two).
ISSUE_TO_READ = DATAPATH_LATENCY + 2
#: Entries of the result queue: the sequencer's credits.
QUEUE_DEPTH = 32
#: An item begun at most this many cycles before the packer is free, behind ``QUEUE_DEPTH`` entries each read at
#: most this many cycles after its op, waits for no credit (see the module documentation, "How it runs fast").
SETTLED = ISSUE_TO_READ + 16
#: Most rounds of :meth:`InteractionModel._leading`'s fixed point (the items go one by one beyond them).
_ROUNDS = 64


@dataclass(frozen=True)
class OpSchedule:
    """The ops of one item shape, and what the packer makes of its entries.

    Attributes
    ----------
    ops : int
        Ops the sequencer issues (:func:`rpaccel.rtl.interaction.item_cycles`).
    entry_op : numpy.ndarray
        Per entry, the index of the op that pushes it.
    pushed_before : numpy.ndarray
        Per op, the entries pushed by the item's ops before it.
    emit : numpy.ndarray
        Per packer action (the entries, then the flush if there is one), whether it emits an output word.
    flush : bool
        The item's last entry overflows its word: the packer takes one more cycle to put out the rest.
    words : int
        Output words of the item.
    word_action, word_op : numpy.ndarray
        Per output word, the packer action that emits it, and the op whose entry that action reads (``ops`` for
        the flush: one after the last op).
    """

    ops: int
    entry_op: np.ndarray
    pushed_before: np.ndarray
    emit: np.ndarray
    flush: bool
    words: int
    word_action: np.ndarray
    word_op: np.ndarray


@cache
def op_schedule(mode, vectors, dim, lanes, pair_lanes):
    """The :class:`OpSchedule` of an item of ``vectors`` vectors of ``dim`` elements in ``mode`` (``"dot"`` or
    ``"cat"``) on a unit of ``lanes`` lanes and ``pair_lanes`` pair lanes (``_Sequencer``'s order: the output
    vectors' chunks, then per group of ``pair_lanes`` pairs its chunks, pushing on the last)."""
    chunks = -(-dim // lanes)
    chunk_counts = [min(lanes, dim - c * lanes) for c in range(chunks)]
    push, counts = [], []                   # per op: pushes an entry; per entry: its elements
    for _ in range(vectors if mode == "cat" else 1):
        push += [True] * chunks
        counts += chunk_counts
    if mode == "dot":
        pairs = vectors * (vectors - 1) // 2
        for first in range(0, pairs, pair_lanes):
            push += [False] * (chunks - 1) + [True]
            counts.append(min(pair_lanes, pairs - first))
    emit, fill = [], 0
    for count in counts[:-1]:
        fill += count
        emit.append(fill >= lanes)
        fill -= lanes if fill >= lanes else 0
    flush = fill + counts[-1] > lanes
    emit += [True] * (1 + flush)
    push = np.array(push)
    entry_op = np.flatnonzero(push)
    word_action = np.flatnonzero(emit)
    schedule = OpSchedule(ops=len(push), entry_op=entry_op, pushed_before=np.cumsum(push) - push,
                          emit=np.array(emit), flush=bool(flush), words=len(word_action), word_action=word_action,
                          word_op=np.append(entry_op, len(push))[word_action])
    for array in (schedule.entry_op, schedule.pushed_before, schedule.emit, schedule.word_action, schedule.word_op):
        array.flags.writeable = False
    return schedule


@dataclass
class InteractionRun:
    """What :meth:`InteractionModel.run` returns.

    Attributes
    ----------
    accepted : numpy.ndarray
        The cycle each input word was accepted (int64).
    outputs : numpy.ndarray or None
        The output words, ``(n, limbs)`` uint64 (as :class:`~rpaccel.sim.player.Player` returns with
        ``words=True``); ``None`` for a run without ``values``.
    output_cycles : numpy.ndarray
        The cycle each output word left (int64).
    cycles : int
        The last transfer's cycle + 1 (:attr:`rpaccel.sim.player.PlayerResult.cycles`).
    """

    accepted: np.ndarray
    outputs: np.ndarray
    output_cycles: np.ndarray
    cycles: int


@cache
def _groups(emit):
    """The packer's groups of actions (``emit`` the bytes of a bool array): their starts and ends (the emitting
    actions, as lists), their lengths (an array) and whether actions that emit nothing trail the last group."""
    emit = np.frombuffer(emit, dtype=bool)
    ends = np.flatnonzero(emit)
    starts = np.concatenate(([0], ends + 1))
    trailing = bool(starts[-1] < len(emit))
    if not trailing:
        starts = starts[:-1]
    return starts.tolist(), ends.tolist(), np.diff(np.append(starts, len(emit))), trailing


def _bits(words, offset, width):
    """Bits ``offset .. offset + width - 1`` of ``(n, limbs)`` uint64 words, as ``(n, ceil(width / 64))`` words."""
    limb, shift = divmod(offset, 64)
    out = []
    for k in range(-(-width // 64)):
        low = words[:, limb + k] >> np.uint64(shift)
        if shift and limb + k + 1 < words.shape[1]:
            low |= words[:, limb + k + 1] << np.uint64(64 - shift)
        out.append(low)
    result = np.stack(out, axis=1)
    if width % 64:
        result[:, -1] &= np.uint64((1 << (width % 64)) - 1)
    return result


class _State:
    """Where a run stands between items: the loader's and sequencer's (rules 1 and 2), the packer's first free
    cycle, every entry's read so far, the output cycles so far."""

    def __init__(self, items, not_before):
        count = len(not_before)
        index = np.arange(count, dtype=np.int64)
        firsts = np.array([first for first, _, _, _ in items], np.int64)
        lasts = firsts + np.array([length for _, length, _, _ in items], np.int64) - 1
        # Rule 1 within an item: A[k] = max(A[first] + k - first, k + max over j <= k of (not_before[j] - j)); the
        # words before the item's first are bounded by its A[first] already.
        offered = index + np.maximum.accumulate(not_before - index)
        self.not_before = not_before
        self.firsts = firsts
        #: Per item, its first word's not-before cycle and the bound rule 1 puts on its last word's acceptance.
        self.first_offer, self.last_offer = not_before[firsts].tolist(), offered[lasts].tolist()
        self.starts = []                    # per item, its first word's acceptance
        entries = sum(schedule.entry_op.size for _, _, schedule, _ in items if schedule is not None)
        self.reads = np.empty(entries, np.int64)    # per entry, the packer's read (those rule 3 may still ask for)
        self.outs = []
        self.packer, self.entry = 0, 0

    def result(self):
        """Every input word's acceptance and every output word's cycle."""
        gates = self.not_before.copy()
        gates[self.firsts] = self.starts
        index = np.arange(len(gates), dtype=np.int64)
        accepted = index + np.maximum.accumulate(gates - index)
        return accepted, np.concatenate(self.outs) if self.outs else np.zeros(0, np.int64)


class _Ready:
    """The output's ``ready`` per cycle, as the first ready cycle from each (ready in every cycle beyond the
    pattern)."""

    def __init__(self, pattern):
        pattern = np.asarray(pattern, dtype=bool)
        if pattern.ndim != 1:
            raise ValueError(f"Ready pattern must be one-dimensional, not of shape {pattern.shape}")
        size = len(pattern)
        cycles = np.where(pattern, np.arange(size), size)
        #: Per cycle of the pattern, the first ready cycle from it.
        self.table = np.minimum.accumulate(cycles[::-1])[::-1].tolist()


class InteractionModel:
    """The interaction unit's timing and values, for a unit of the given parameters (as
    :class:`~rpaccel.rtl.interaction.Interaction`'s).

    Parameters
    ----------
    lanes : int
        int8 elements per word (a power of two).
    max_vectors, max_dim : int
        Most vectors per item, largest dimension.
    pair_lanes : int
        Pairs computed at once (at most ``lanes``).
    """

    def __init__(self, *, lanes, max_vectors, max_dim, pair_lanes=DEFAULT_PAIR_LANES):
        for what, value in (("lanes", lanes), ("max_vectors", max_vectors), ("max_dim", max_dim),
                            ("pair_lanes", pair_lanes)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Interaction model {what} must be a positive integer, not {value!r}")
        if lanes & (lanes - 1):
            raise ValueError(f"Interaction model lanes must be a power of two, not {lanes!r}")
        if pair_lanes > lanes:
            raise ValueError(f"Interaction model pair_lanes must be at most lanes ({lanes}), not {pair_lanes!r}")
        self.lanes, self.max_vectors, self.max_dim, self.pair_lanes = lanes, max_vectors, max_dim, pair_lanes
        layout = interaction_in_layout(lanes, max_vectors, max_dim)
        self._in = codec(layout)
        self._params = codec(layout["params"].shape)
        self._params_offset = layout["params"].offset
        self._out = codec(interaction_out_layout(lanes))

    @classmethod
    def for_config(cls, config, *, pair_lanes=DEFAULT_PAIR_LANES):
        """The model of ``Interaction.for_config(config, pair_lanes=pair_lanes)``."""
        return cls(lanes=config.array_rows, max_vectors=config.max_tables + 1, max_dim=config.max_emb_dim,
                   pair_lanes=pair_lanes)

    def run(self, words, *, not_before=None, ready=None, values=True):
        """Run the unit on input ``words``.

        Parameters
        ----------
        words : numpy.ndarray
            ``(n, limbs)`` uint64 input words, as :func:`~rpaccel.host.driver.interaction.encode_items` makes them.
        not_before : array_like, optional
            Per word, the cycle before which it is not offered (default: every word as soon as possible).
        ready : array_like of bool, optional
            The output's ``ready`` in cycles ``0, 1, ...``; the output is ready in every cycle beyond the pattern.
            Default: always ready.
        values : bool
            Compute the output words (``False``: the timing only, :attr:`InteractionRun.outputs` is ``None``).

        Returns
        -------
        InteractionRun

        Raises
        ------
        ValueError
            On an item with more vectors or a larger dimension than the unit takes, an item cut short by the end
            of the words, or a ``not_before`` of the wrong length.
        """
        words = np.asarray(words)
        count = len(words)
        not_before = np.zeros(count, np.int64) if not_before is None else np.asarray(not_before, np.int64)
        if not_before.shape != (count,):
            raise ValueError(f"not_before must give one cycle per input word ({count}), not shape "
                             f"{not_before.shape}")
        if not count:
            nothing = np.zeros(0, np.int64)
            outputs = np.zeros((0, -(-self._out.width // 64)), np.uint64) if values else None
            return InteractionRun(accepted=nothing, outputs=outputs, output_cycles=nothing, cycles=0)
        if values:
            columns = self._in.unpack(words)
            params, data = columns["params"], columns["data"]
        else:
            self._in.unpack(words[:1])      # the words' shape and width checked on one
            params = self._params.unpack(_bits(words, self._params_offset, self._params.width))
        items = self._items(params, count)
        accepted, output_cycles = self._timing(items, not_before, None if ready is None else _Ready(ready))
        outputs = self._outputs(items, params, data) if values else None
        last = max(int(accepted[-1]), int(output_cycles[-1]) if len(output_cycles) else -1)
        return InteractionRun(accepted=accepted, outputs=outputs, output_cycles=output_cycles, cycles=last + 1)

    # --- the items ------------------------------------------------------------------------------------------------

    def _items(self, params, count):
        """``[(first word, words, schedule or None for an empty item, parameter tuple)]`` in order: the words
        as the loader walks them, an item's first word giving its length."""
        vectors, dims = params["vectors"], params["dim"]
        empty = (vectors == 0) | (dims == 0)
        length = np.where(empty, 1, vectors * -(-dims // self.lanes))
        after = (np.arange(count) + length).tolist()
        firsts, word = [], 0
        while word < count:
            firsts.append(word)
            word = after[word]
        firsts = np.array(firsts, np.int64)
        keys = np.stack([params[name][firsts] for name in ("mode", "vectors", "dim", "m", "s")], axis=1)
        unique, seen, kinds = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        shapes = [(None, None)] * len(unique)        # per kind of item: its schedule and parameters
        for kind in np.argsort(seen).tolist():
            code, f, d, m, s = unique[kind].tolist()
            if f and d:
                mode = MODES[code]
                check_item_params(mode, f, d, max_vectors=self.max_vectors, max_dim=self.max_dim)
                shapes[kind] = (op_schedule(mode, f, d, self.lanes, self.pair_lanes), (mode, f, d, m, s))
        last = int(firsts[-1])
        if after[last] > count:
            code, f, d = (int(params[name][last]) for name in ("mode", "vectors", "dim"))
            raise ValueError(f"Item at input word {last} ({MODES[code]}, {f} x {d}) needs {after[last] - last} "
                             f"words, {count - last} are left")
        lengths = length[firsts].tolist()
        return [(first, words) + shapes[kind]
                for first, words, kind in zip(firsts.tolist(), lengths, kinds.ravel().tolist())]

    def _outputs(self, items, params, data):
        """The output words: each item's :func:`interaction_model` vector in zero-padded words, ``last`` on its
        final one; items of one shape and ``(m, s)`` computed together."""
        lanes = self.lanes
        real = [item for item in items if item[2] is not None]
        starts = np.cumsum([0] + [schedule.words for _, _, schedule, _ in real])
        groups = {}
        for (first, _, _, key), start in zip(real, starts):
            groups.setdefault(key, []).append((first, start))
        out_data = np.zeros((int(starts[-1]), lanes), np.int64)
        out_last = np.zeros(int(starts[-1]), np.int64)
        for (mode, f, d, m, s), places in groups.items():
            firsts, outs = np.array(places).T
            chunks = -(-d // lanes)
            rows = data[firsts[:, None] + np.arange(f * chunks)]
            vectors = rows.reshape(len(firsts), f, chunks * lanes)[:, :, :d]
            values = interaction_model(mode, vectors, m, s)
            per_item = -(-output_width(mode, f, d) // lanes)
            padded = np.zeros((len(firsts), per_item * lanes), np.int64)
            padded[:, :values.shape[1]] = values
            index = (outs[:, None] + np.arange(per_item)).ravel()
            out_data[index] = padded.reshape(-1, lanes)
            out_last[outs + per_item - 1] = 1
        return self._out.pack({"data": out_data, "last": out_last})

    # --- the timing -----------------------------------------------------------------------------------------------

    def _timing(self, items, not_before, ready):
        state = _State(items, not_before)
        starts = state.starts
        run = []            # items in closed form not yet written out: (begin, packer before, schedule, entry)
        paced = False           # the packer set the pace of the last item that went alone
        accepted, released, loaded = -1, [-1, -1], 0    # released: per bank, its last item's last op
        if ready is None:
            accepted, released, loaded = self._leading(items, state)
        settled = QUEUE_DEPTH + state.entry     # entries behind the next item read at most SETTLED after their op
        for (_, length, schedule, _), first_offer, last_offer in zip(items[loaded:], state.first_offer[loaded:],
                                                                      state.last_offer[loaded:]):
            # Rules 1 and 2.
            start = max(first_offer, accepted + 1, released[loaded % 2] + 1)
            starts.append(start)
            if schedule is None:
                accepted = start
                continue
            accepted = max(start + length - 1, last_offer)
            begin = max(accepted + 1, released[1 - loaded % 2] + 1)
            entries, packer = schedule.entry_op.size, state.packer
            if ready is None and settled >= QUEUE_DEPTH and packer - begin <= SETTLED:
                run.append((begin, packer, schedule, state.entry))
                state.packer = max(packer + entries, begin + ISSUE_TO_READ + schedule.ops) + schedule.flush
                release = begin + schedule.ops - 1
                settled += entries
            else:
                self._closed_form(run, state)
                run = []
                release, state.packer, calm, paced = self._item(schedule, begin, packer, state.reads, state.entry,
                                                                ready, state.outs, paced)
                settled = settled + entries if calm else 0
            released[loaded % 2] = release
            loaded += 1
            state.entry += entries
        self._closed_form(run, state)
        return state.result()

    def _leading(self, items, state):
        """The items before the first empty one, the output always ready, all at once: rules 1 and 2 solved as
        max-plus recurrences over the items, rule 5 in closed form; the items before the first whose packer lags
        (``P - S > SETTLED``) committed. Return the loader's and sequencer's state after them (the last word's
        acceptance, each bank's release, the items committed)."""
        count = next((index for index, item in enumerate(items) if item[2] is None), len(items))
        if not count:
            return -1, [-1, -1], 0
        schedules = [schedule for _, _, schedule, _ in items[:count]]
        length = np.array([length for _, length, _, _ in items[:count]], np.int64)
        ops = np.array([schedule.ops for schedule in schedules], np.int64)
        entries = np.array([schedule.entry_op.size for schedule in schedules], np.int64)
        flush = np.array([schedule.flush for schedule in schedules], np.int64)
        first_offer = np.array(state.first_offer[:count], np.int64)
        alone = np.maximum(first_offer + length - 1, np.array(state.last_offer[:count], np.int64))
        length_sum, ops_sum = np.cumsum(length), np.cumsum(ops)
        # accepted[i] = max(alone[i], accepted[i - 1] + length[i], release[i - 2] + length[i]) and release[i] =
        # max(accepted[i], release[i - 1]) + ops[i]: iterated from below to their fixed point, a few rounds
        # (one per change of what binds along the run).
        release = np.full(count, -1, np.int64)
        for _ in range(_ROUNDS):
            gate = np.concatenate(([-1, -1], release))[:count]      # release[i - 2] (a job of one item too)
            accepted = length_sum + np.maximum.accumulate(np.maximum(alone, gate + length) - length_sum)
            again = ops_sum + np.maximum.accumulate(accepted + ops - ops_sum)
            if np.array_equal(again, release):
                break
            release = again
        else:
            return -1, [-1, -1], 0
        before = np.concatenate(([-1], release[:-1]))
        begin = np.maximum(accepted + 1, before + 1)
        start = np.maximum(first_offer, np.maximum(np.concatenate(([-1], accepted[:-1])), gate) + 1)
        # The packer: P[i + 1] = max(P[i] + entries[i], begin[i] + ISSUE_TO_READ + ops[i]) + flush[i].
        step = np.concatenate(([0], np.cumsum(entries + flush)))
        reach = np.maximum.accumulate(begin + ISSUE_TO_READ + ops + flush - step[1:])
        packer = step + np.maximum(state.packer, np.concatenate(([state.packer], reach)))
        lagging = np.flatnonzero(packer[:-1] - begin > SETTLED)
        done = int(lagging[0]) if lagging.size else count
        firsts = np.concatenate(([0], np.cumsum(entries)))
        state.starts.extend(start[:done].tolist())
        self._closed_form(list(zip(begin[:done].tolist(), packer[:done].tolist(), schedules[:done],
                                   (state.entry + firsts[:done]).tolist())), state)
        state.packer = int(packer[done])
        state.entry += int(firsts[done])
        released = [int(release[bank::2][:(done - bank + 1) // 2][-1]) if done > bank else -1 for bank in (0, 1)]
        return int(accepted[done - 1]) if done else -1, released, done

    @staticmethod
    def _closed_form(run, state):
        """The output cycles of a run of items whose reads are all at most ``SETTLED`` cycles after their ops, in
        closed form (word ``w`` of an item begun in ``S`` with the packer free from ``P``: ``max(P + action,
        S + ISSUE_TO_READ + op) + 1``), and the reads of its last ``QUEUE_DEPTH`` entries for the items after."""
        if not run:
            return
        begins, packers, schedules, _ = zip(*run)
        words = np.array([schedule.words for schedule in schedules])
        action = np.concatenate([schedule.word_action for schedule in schedules])
        op = np.concatenate([schedule.word_op for schedule in schedules])
        state.outs.append(np.maximum(np.repeat(packers, words) + action,
                                     np.repeat(begins, words) + ISSUE_TO_READ + op) + 1)
        needed = QUEUE_DEPTH
        for begin, packer, schedule, entry in reversed(run):
            count = schedule.entry_op.size
            state.reads[entry:entry + count] = np.maximum(packer + np.arange(count),
                                                          begin + ISSUE_TO_READ + schedule.entry_op)
            needed -= count
            if needed <= 0:
                break

    def _item(self, schedule, begin, packer, reads, entry, ready, outs, paced):
        """Issue one item's ops from ``begin`` (rules 2-5), its entries' reads into ``reads[entry:]`` and its
        output cycles appended to ``outs``; return its last op's cycle, the packer's next free cycle, whether
        every entry was read at most ``SETTLED`` cycles after its op and whether the packer set the pace.

        Two guesses, each checked, the one that held for the item before (``paced``) first: no op waits for a
        credit its own item owes; or the packer sets the pace (every entry is in the queue before the packer
        comes to it, so the reads are the packer's chain alone, and the ops follow from the credits). Neither:
        in blocks."""
        entries = schedule.entry_op.size
        ops = np.arange(schedule.ops, dtype=np.int64)
        late = schedule.pushed_before >= QUEUE_DEPTH
        for guess in (True, False) if paced else (False, True):
            if guess:
                done, cycles, free = self._pack(None, schedule.emit, schedule.flush, packer, ready)
                reads[entry:entry + entries] = done[:entries]
                credit = self._credit_bound(schedule.pushed_before, reads, entry, entries, entries)
                issue = ops + np.maximum(begin, np.maximum.accumulate(credit - ops))
                held = np.all(issue[schedule.entry_op] + ISSUE_TO_READ <= done[:entries])
            else:
                credit = self._credit_bound(schedule.pushed_before, reads, entry, 0, entries)
                issue = ops + np.maximum(begin, np.maximum.accumulate(credit - ops))
                done, cycles, free = self._pack(issue[schedule.entry_op] + ISSUE_TO_READ, schedule.emit,
                                                schedule.flush, packer, ready)
                reads[entry:entry + entries] = done[:entries]
                held = not np.any(late) or np.all(reads[entry + schedule.pushed_before[late] - QUEUE_DEPTH]
                                                  < issue[late])
            if held:
                outs.append(cycles)
                calm = bool(np.all(done[:entries] - issue[schedule.entry_op] <= SETTLED))
                return int(issue[-1]), free, calm, guess
        # The item's own entries hold its later ops back: in blocks of QUEUE_DEPTH entries, each bounded by the
        # reads of the block before (all known).
        base, free, calm = begin, packer, True
        for low in range(0, entries, QUEUE_DEPTH):
            high = min(low + QUEUE_DEPTH, entries)
            first_op = 0 if low == 0 else int(schedule.entry_op[low - 1]) + 1
            block = ops[first_op:schedule.entry_op[high - 1] + 1]
            credit = self._credit_bound(schedule.pushed_before[block], reads, entry, low, high)
            issue = block + np.maximum(base, np.maximum.accumulate(credit - block))
            base = int(issue[-1]) - int(block[-1])
            last = high == entries
            pushes = issue[schedule.entry_op[low:high] - first_op]
            done, cycles, free = self._pack(pushes + ISSUE_TO_READ, schedule.emit[low:high + last],
                                            last and schedule.flush, free, ready)
            reads[entry + low:entry + high] = done[:high - low]
            calm &= bool(np.all(done[:high - low] - pushes <= SETTLED))
            outs.append(cycles)
        return base + schedule.ops - 1, free, calm, False

    @staticmethod
    def _credit_bound(pushed_before, reads, entry, low, high):
        """Per op (``pushed_before`` its item's entries pushed before it), the first cycle rule 3 allows: the
        cycle after the read of the entry ``QUEUE_DEPTH`` before, for the ops whose entry is before ``low`` or
        at it (the rest are bounded by entries of their own block, checked by the caller)."""
        behind = entry - QUEUE_DEPTH + pushed_before
        if entry >= QUEUE_DEPTH and low >= high:
            return reads[behind] + 1
        known = (behind >= 0) & (pushed_before - QUEUE_DEPTH < low)
        return np.where(known, reads[np.maximum(behind, 0)] + 1, -1)

    @staticmethod
    def _pack(available, emit, flush, free, ready):
        """Rule 5 on a run of the packer's actions (entries ``available`` from the given cycles, or ``None``:
        each there before the packer comes to it; then the flush if ``flush``), the packer free from ``free``: the
        actions' cycles, the emitted words' cycles and the packer's next free cycle."""
        count = len(emit)
        steps = np.arange(count, dtype=np.int64)
        slack = None
        if available is not None:
            slack = (np.append(available, -1) if flush else available) - steps
        if ready is None:
            acts = steps + (free if slack is None else np.maximum(free, np.maximum.accumulate(slack)))
            return acts, acts[emit] + 1, int(acts[-1]) + 1
        # A group of actions ends with an emitting one; the next group starts when its word has left, in the first
        # ready cycle after the action (ready.table[cycle] for a cycle within the pattern).
        starts, ends, lengths, trailing = _groups(emit.tobytes())
        table, size = ready.table, len(ready.table)
        bases, words = [], []
        if slack is None:
            for start, end in zip(starts, ends):
                bases.append(free - start)
                cycle = free + end - start + 1
                free = table[cycle] if cycle < size else cycle
                words.append(free)
        else:
            group_max = np.maximum.reduceat(slack, starts).tolist()
            for start, end, most in zip(starts, ends, group_max):
                base = max(free - start, most)
                bases.append(free - start)
                cycle = base + end + 1
                free = table[cycle] if cycle < size else cycle
                words.append(free)
        if trailing:
            start = starts[-1]
            bases.append(free - start)
            free = (free - start if slack is None else max(free - start, int(slack[start:].max()))) + count
        base = np.repeat(np.array(bases, np.int64), lengths)
        if slack is not None:
            group = np.repeat(np.arange(len(starts)), lengths)
            spread = 1 << 42
            base = np.maximum(base, np.maximum.accumulate(slack + group * spread) - group * spread)
        return steps + base, np.array(words, np.int64), free
