"""A quantised ranking model's MLPs on the MLP engine: programs out, tensors back.

The MLP engine computes fully connected layers; until the chip's top level joins the units, the embedding pooling
and the interaction stay on the host, computed by :mod:`rpaccel.host.reference` exactly as the reference does.
:class:`EngineModel` turns a :class:`~rpaccel.host.quant.QuantModel`'s MLPs (bottom, top, task towers) into
engine programs with :func:`~rpaccel.host.driver.mlp.plan_engine`, one MLP per program: the batch is spread over
the lanes of the split (each lane a contiguous slice of the items, every lane reading one shared weight image),
and the lanes' outputs are put back in item order. It never runs anything itself: :meth:`EngineModel.run` hands
each program to a device function (for instance :func:`rpaccel.sim.mlp_harness.play_plan` on Verilator, as
:func:`rpaccel.sim.mlp_harness.play_model` does).

Example::

    engine = EngineModel(qmodel, preset("small"), split=2)
    tensors = engine.run(dense_q, ids, lambda plan: play_plan(config, plan)[0])
    tensors["logits"]                       # the engine's int32 logits, as qmodel.logits(dense_q, ids)
"""

import numpy as np

from ...rtl.mlp import EngineGeometry
from ..reference import MLPError, check_inputs, interact, pool
from .mlp import chunk_limit, layout_weights, plan_engine

__all__ = ["EngineModel"]


class EngineModel:
    """The MLPs of a quantised model laid out for the MLP engine of ``config`` at split ``split``.

    Parameters
    ----------
    qmodel : rpaccel.host.quant.QuantModel
    config : rpaccel.config.AccelConfig
    split : int
        One of the engine's splits; a batch is spread over its lanes.
    chunk : int, optional
        Most items per chunk on a lane (default: as many as the lane holds, see
        :func:`~rpaccel.host.driver.mlp.chunk_limit`).

    Attributes
    ----------
    mlps : dict
        ``{"bottom": [Layer, ...], "top": [...], "task0": [...], ...}`` in the order they run (no ``bottom`` for a
        model without a bottom MLP).

    Raises
    ------
    MLPError
        If ``split`` is not one of the engine's, or an MLP does not fit the engine (its weight image exceeds the
        weight memory, or one item exceeds a lane's activation memory), naming the MLP and the buffer.
    """

    def __init__(self, qmodel, config, *, split=1, chunk=None):
        self.qmodel = qmodel
        self.config = config
        self.geometry = EngineGeometry(config)
        if split not in self.geometry.splits:
            raise MLPError(f"Split {split} is not one of the engine's splits {tuple(self.geometry.splits)}")
        self.split = split
        self.chunk = chunk
        self.mlps = {name: layers for name, layers in qmodel.mlps().items() if layers}
        for name, layers in self.mlps.items():
            try:
                layout_weights(self.geometry, split, {name: layers})
                chunk_limit(self.geometry, split, layers)
            except MLPError as error:
                raise MLPError(f"{qmodel.spec.name} {name} MLP on {config.name} split {split}: {error}") from None

    def plan(self, mlp, inputs):
        """The :class:`~rpaccel.host.driver.mlp.EnginePlan` that runs MLP ``mlp`` (a key of :attr:`mlps`) on the
        batch ``inputs`` (``items x K`` int8), the items spread as evenly as possible over the split's lanes."""
        if mlp not in self.mlps:
            raise MLPError(f"{self.qmodel.spec.name} has no {mlp!r} MLP; it has {', '.join(self.mlps)}")
        layers = self.mlps[mlp]
        inputs = np.asarray(inputs)
        if len(inputs) == 0:
            raise MLPError("The batch has no items")
        parts = np.array_split(inputs, min(self.split, len(inputs)))
        jobs = {lane: (layers, part) for lane, part in enumerate(parts)}
        return plan_engine(self.config, self.split, jobs, chunk=self.chunk, geometry=self.geometry)

    @staticmethod
    def decode(plan, outputs):
        """The ``items x N`` result of ``plan`` from its lanes' decoded outputs ``{lane: rows}`` (as
        :meth:`~rpaccel.host.driver.mlp.EnginePlan.decode` gives them), in item order."""
        if set(outputs) != set(plan.lanes):
            raise ValueError(f"Expected the outputs of lanes {sorted(plan.lanes)}, got lanes {sorted(outputs)}")
        return np.concatenate([outputs[lane] for lane in sorted(plan.lanes)])

    def run(self, dense_q, ids, execute):
        """Score a batch: each MLP on the engine, pooling and interaction on the host.

        Parameters
        ----------
        dense_q, ids : array_like
            The batch, as for :func:`rpaccel.host.reference.run`.
        execute : callable
            The device: ``execute(plan)`` runs an :class:`~rpaccel.host.driver.mlp.EnginePlan` on a freshly
            reset engine and returns its decoded outputs ``{lane: items x N}``.

        Returns
        -------
        dict
            The tensors the engine computed, under the keys of ``rpaccel.host.reference.run(..., trace=True)``:
            each MLP's output under its last layer's name (``bottom1``, ``top1``, ``task0.2``, ...), the host's
            ``interaction`` (the top MLP's input, from the engine's bottom output) and ``logits``.
        """
        dense_q, ids = check_inputs(self.qmodel, dense_q, ids)
        tensors = {}

        def mlp(name, inputs):
            plan = self.plan(name, inputs)
            out = self.decode(plan, execute(plan))
            tensors[self.mlps[name][-1].name] = out
            return out

        x = mlp("bottom", dense_q) if "bottom" in self.mlps else dense_q
        x = interact(self.qmodel, x, pool(self.qmodel, ids))
        tensors["interaction"] = x
        x = mlp("top", x)
        tasks = self.qmodel.spec.tasks
        tensors["logits"] = np.stack([mlp(f"task{task}", x)[:, 0] for task in range(tasks)], axis=1) if tasks \
            else x[:, 0]
        return tensors
