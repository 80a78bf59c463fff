"""Model zoo: the ranking models of RecPipe (RM-small/med/large) and DeepRecSys (RMC1-3, NCF, WnD, MT-WnD, DIN,
DIEN) as specifications.

A :class:`ModelSpec` holds what the accelerator and the host need to know about a model: dense inputs, the
bottom MLP, the embedding tables (rows, dimension, IDs pooled per lookup), the interaction, the top MLP and any
per-task towers. It reports its multiply-accumulates and embedding bytes per ranked item, and
:meth:`ModelSpec.scaled` caps the table rows so a model fits a simulation (DLRM's ``--max-ind-range``).

Layer widths are the papers' artifacts' configurations (``harvard-acc/RecPipe`` ``configs/model_configs`` and
``harvard-acc/DeepRecSys`` ``models/configs``); the few places where a config does not define a ranking model by
itself are listed in the ``notes`` of the spec and in ``docs/host.md``.

The DLRM family -- bottom MLP (or raw dense inputs), sum-pooled embeddings, ``dot`` or ``cat`` interaction, top
MLP, optional task towers -- is what :mod:`rpaccel.host.train`, :mod:`rpaccel.host.quant` and
:mod:`rpaccel.host.reference` implement (:attr:`ModelSpec.trainable`). NCF's GMF branch, DIN's attention unit
and DIEN's recurrent layers are specified for their costs only.
"""

import itertools
import json
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

__all__ = ["CRITEO_KAGGLE_ROWS", "INTERACTIONS", "ZOO", "ModelError", "ModelSpec", "get_model", "model_names",
           "pair_indices"]

#: Distinct values of the 26 categorical features of the Criteo Kaggle display-advertising data set (the table
#: sizes of DLRM's and RecPipe's Kaggle models).
CRITEO_KAGGLE_ROWS = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                      5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)

#: Interactions: ``dot`` and ``cat`` are implemented end to end; the others are cost models only.
INTERACTIONS = ("dot", "cat", "ncf", "attention", "gru")


class ModelError(ValueError):
    """A model name or specification is invalid (the message names the field and value)."""


def _widths(name, value, *, allow_empty=True):
    if not isinstance(value, tuple) or (not value and not allow_empty) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ModelError(f"{name} must be a tuple of positive integers, not {value!r}")


def _positive(name, value, *, zero=False):
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if zero else 1):
        kind = "non-negative" if zero else "positive"
        raise ModelError(f"{name} must be a {kind} integer, not {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """One ranking model.

    Parameters
    ----------
    name : str
        Zoo name (``rm-small``, ``rmc1``, ...).
    source : str
        Where the configuration comes from.
    dense : int
        Number of dense (continuous) inputs; 0 for none.
    bottom : tuple of int
        Output widths of the bottom MLP's layers (ReLU after each); empty: the dense inputs enter the interaction
        as they are (Wide & Deep).
    tables : tuple of int
        Rows of each embedding table.
    emb_dim : int
        Embedding dimension (all tables).
    pooling : int
        IDs looked up and sum-pooled per table and item.
    interaction : str
        ``dot`` (DLRM: bottom output and pooled vectors, pairwise dot products ``i < j`` concatenated after the
        bottom output), ``cat`` (concatenation), or a cost-only kind (``ncf``, ``attention``, ``gru``).
    top : tuple of int
        Output widths of the top MLP (ReLU after each but the last, which gives the raw logit unless towers
        follow). Its input width is derived from the interaction.
    tasks : int
        Number of task towers after the top MLP (MT-WnD); 0 for a single-output model.
    tower : tuple of int
        Output widths of each task tower; the last is 1 (the task's logit).
    aux : dict
        Extra sizes of the cost-only kinds (``behaviour`` lookups, ``attention`` or ``gru_hidden`` widths).
    notes : str
        Deviations from the source configuration, if any.
    """

    name: str
    source: str
    dense: int
    bottom: tuple
    tables: tuple
    emb_dim: int
    pooling: int
    interaction: str
    top: tuple
    tasks: int = 0
    tower: tuple = ()
    aux: dict = field(default_factory=dict, compare=False, hash=False)
    notes: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ModelError(f"Model name must be a non-empty string, not {self.name!r}")
        _positive("dense", self.dense, zero=True)
        _widths("bottom", self.bottom)
        _widths("tables", self.tables, allow_empty=False)
        _positive("emb_dim", self.emb_dim)
        _positive("pooling", self.pooling)
        _widths("top", self.top, allow_empty=False)
        _positive("tasks", self.tasks, zero=True)
        _widths("tower", self.tower)
        if self.interaction not in INTERACTIONS:
            raise ModelError(f"interaction must be one of {', '.join(INTERACTIONS)}, not {self.interaction!r}")
        if self.bottom and not self.dense:
            raise ModelError(f"Model {self.name}: a bottom MLP needs dense inputs")
        if self.interaction == "dot":
            if not self.bottom:
                raise ModelError(f"Model {self.name}: the dot interaction needs a bottom MLP")
            if self.bottom[-1] != self.emb_dim:
                raise ModelError(f"Model {self.name}: the dot interaction needs the bottom MLP to end in emb_dim "
                                 f"({self.emb_dim}), not {self.bottom[-1]}")
        if self.tasks:
            if not self.tower or self.tower[-1] != 1:
                raise ModelError(f"Model {self.name}: task towers must end in one output, not {self.tower!r}")
        elif self.tower:
            raise ModelError(f"Model {self.name}: tower given without tasks")
        elif self.trainable and self.top[-1] != 1:
            raise ModelError(f"Model {self.name}: the top MLP must end in one output (the logit), not "
                             f"{self.top[-1]}")

    # Structure -------------------------------------------------------------------------------------------

    @property
    def trainable(self):
        """Whether training, quantisation and the integer reference implement this model (the DLRM family)."""
        return self.interaction in ("dot", "cat")

    @property
    def num_tables(self):
        return len(self.tables)

    @property
    def bottom_width(self):
        """Width of what the dense side contributes to the interaction (bottom output or the raw inputs)."""
        return self.bottom[-1] if self.bottom else self.dense

    @property
    def num_vectors(self):
        """Vectors entering a ``dot`` interaction: the bottom output and one pooled vector per table."""
        return self.num_tables + 1

    @property
    def num_pairs(self):
        n = self.num_vectors
        return n * (n - 1) // 2

    @property
    def interaction_width(self):
        """Width of the top MLP's input."""
        if self.interaction == "dot":
            return self.bottom_width + self.num_pairs
        if self.interaction == "cat":
            return self.bottom_width + self.num_tables * self.emb_dim
        if self.interaction == "ncf":  # the MLP branch sees the two MLP-side tables
            return 2 * self.emb_dim
        if self.interaction == "attention":  # user profile, attention output, candidate ad, context
            return 4 * self.emb_dim
        return self.aux["gru_hidden"] + 3 * self.emb_dim

    def layers(self):
        """Every fully connected layer as ``(name, inputs K, outputs N, relu)``, in execution order.

        Cost-only parts (attention, recurrent cells) are not layers here; see :meth:`macs_per_item`.
        """
        out = []
        k = self.dense
        for i, n in enumerate(self.bottom):
            out.append((f"bottom{i}", k, n, True))
            k = n
        k = self.interaction_width
        last_top = len(self.top) - 1
        for i, n in enumerate(self.top):
            relu = i < last_top or bool(self.tasks) or not self.trainable
            out.append((f"top{i}", k, n, relu))
            k = n
        if self.interaction == "ncf":  # final predictor on [GMF vector, MLP output]
            out.append(("final0", self.emb_dim + self.top[-1], 1, False))
        for task in range(self.tasks):
            kt = self.top[-1]
            for i, n in enumerate(self.tower):
                out.append((f"task{task}.{i}", kt, n, i < len(self.tower) - 1))
                kt = n
        return out

    # Costs -----------------------------------------------------------------------------------------------

    def macs_per_item(self):
        """Multiply-accumulates to rank one item: every layer, plus the interaction's dot products (``dot``) or
        the attention / recurrent work (cost-only kinds). Embedding pooling is additions, counted in bytes."""
        macs = sum(k * n for _, k, n, _ in self.layers())
        if self.interaction == "dot":
            macs += self.num_pairs * self.emb_dim
        elif self.interaction == "attention":
            # DeepRecSys's DIN: per behaviour, an MLP on [behaviour, candidate, behaviour + candidate].
            widths = (3 * self.emb_dim, *self.aux["attention"], self.emb_dim)
            macs += self.aux["behaviour"] * sum(a * b for a, b in itertools.pairwise(widths))
        elif self.interaction == "gru":
            # DeepRecSys's DIEN: RNN(emb -> H), FC(H -> H) attention, RNN(H -> H), per behaviour step.
            h, d = self.aux["gru_hidden"], self.emb_dim
            macs += self.aux["behaviour"] * (h * d + h * h + h * h + 2 * h * h)
        return macs

    def lookups_per_item(self):
        """Embedding rows read per item (tables times pooling)."""
        return self.num_tables * self.pooling

    def embedding_bytes_per_item(self, bytes_per_value=1):
        """Bytes of embedding rows read per item (int8 rows by default; 4 for float32)."""
        return self.lookups_per_item() * self.emb_dim * bytes_per_value

    def table_bytes(self, bytes_per_value=1):
        """Total size of the embedding tables."""
        return sum(self.tables) * self.emb_dim * bytes_per_value

    def describe(self):
        """A dict of the spec and its costs (for listings and ``--json``)."""
        return {"name": self.name, "source": self.source, "dense": self.dense, "bottom": list(self.bottom),
                "tables": len(self.tables), "rows": sum(self.tables), "emb_dim": self.emb_dim,
                "pooling": self.pooling, "interaction": self.interaction, "top": list(self.top),
                "tasks": self.tasks, "tower": list(self.tower), "macs_per_item": self.macs_per_item(),
                "embedding_bytes_per_item": self.embedding_bytes_per_item(),
                "table_bytes": self.table_bytes(), "trainable": self.trainable, "notes": self.notes}

    # Scaling and files -----------------------------------------------------------------------------------

    def scaled(self, max_rows=None, row_scale=None):
        """The same model with smaller tables: rows scaled by ``row_scale`` (at least 1), then capped at
        ``max_rows`` (DLRM's ``--max-ind-range``: IDs are hashed into the smaller table)."""
        rows = self.tables
        if row_scale is not None:
            if not isinstance(row_scale, (int, float)) or not 0 < row_scale <= 1:
                raise ModelError(f"row_scale must be a number in (0, 1], not {row_scale!r}")
            rows = tuple(max(1, math.ceil(r * row_scale)) for r in rows)
        if max_rows is not None:
            _positive("max_rows", max_rows)
            rows = tuple(min(r, max_rows) for r in rows)
        return replace(self, tables=rows)

    def to_json(self):
        data = asdict(self)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        try:
            data = json.loads(text)
            for key in ("bottom", "tables", "top", "tower"):
                data[key] = tuple(data[key])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as error:
            raise ModelError(f"not a model specification: {error}") from None


def _dlrm_dot(name, dim, bottom, top, notes=""):
    return ModelSpec(name=name, source="RecPipe (configs/model_configs, Criteo Kaggle)", dense=13,
                     bottom=bottom, tables=CRITEO_KAGGLE_ROWS, emb_dim=dim, pooling=1, interaction="dot",
                     top=top, notes=notes)


ZOO = {spec.name: spec for spec in [
    _dlrm_dot("rm-small", 4, (64, 4), (64, 1)),
    _dlrm_dot("rm-med", 16, (64, 16), (64, 1)),
    _dlrm_dot("rm-large", 32, (512, 256, 128, 64, 32), (96, 1)),
    ModelSpec(name="rmc1", source="DeepRecSys (models/configs/dlrm_rm1.json)", dense=128, bottom=(64, 32),
              tables=(4_000_000,) * 8, emb_dim=32, pooling=80, interaction="cat", top=(256, 64, 1)),
    ModelSpec(name="rmc2", source="DeepRecSys (models/configs/dlrm_rm2.json)", dense=256, bottom=(128, 64),
              tables=(500_000,) * 32, emb_dim=64, pooling=120, interaction="cat", top=(128, 64, 1)),
    ModelSpec(name="rmc3", source="DeepRecSys (models/configs/dlrm_rm3.json)", dense=2560, bottom=(1024, 256, 32),
              tables=(2_000_000,) * 10, emb_dim=32, pooling=20, interaction="cat", top=(512, 256, 1)),
    ModelSpec(name="wnd", source="DeepRecSys (models/configs/wide_and_deep.json)", dense=512, bottom=(),
              tables=(1_000_000,) * 27, emb_dim=32, pooling=1, interaction="cat", top=(1024, 512, 256, 1)),
    ModelSpec(name="mt-wnd", source="DeepRecSys (models/configs/mtwnd.json)", dense=512, bottom=(),
              tables=(500_000,) * 41 + (5_000_000,) * 2, emb_dim=32, pooling=1, interaction="cat",
              top=(1024, 512), tasks=3, tower=(256, 128, 1),
              notes="3 tasks (DeepRecSys's code defaults to 1); each tower 512-256-128 gets a final 128->1 layer "
                    "so every task has a logit"),
    ModelSpec(name="ncf", source="DeepRecSys (models/configs/ncf.json)", dense=0, bottom=(),
              tables=(140_000, 140_000, 28_000, 28_000), emb_dim=64, pooling=1, interaction="ncf",
              top=(256, 256, 128, 64),
              notes="GMF tables 0-1 summed, MLP tables 2-3 concatenated into 256-256-128-64, final predictor "
                    "128->1 (DeepRecSys's ends in 64 outputs); cost model only"),
    ModelSpec(name="din", source="DeepRecSys (models/configs/din.json)", dense=0, bottom=(),
              tables=(1_000_000,) + (100_000,) * 251 + (10_000_000, 10_000_000), emb_dim=32, pooling=3,
              interaction="attention", top=(200, 80, 2), aux={"behaviour": 251, "attention": (1,)},
              notes="user profile, 251 behaviour tables (config's 250 plus its own), candidate ad, context; "
                    "attention MLP 96-1-32 per behaviour as in DeepRecSys; cost model only"),
    ModelSpec(name="dien", source="DeepRecSys (models/configs/dien.json)", dense=0, bottom=(),
              tables=(500_000,) * 41 + (5_000_000,) * 2, emb_dim=32, pooling=1, interaction="gru",
              top=(200, 80, 2), aux={"behaviour": 40, "gru_hidden": 64},
              notes="tables 1-40 are the behaviour sequence; two tanh RNN layers (hidden 64) with an FC "
                    "attention between them as in DeepRecSys; cost model only"),
]}


def model_names():
    return list(ZOO)


def get_model(name, *, max_rows=None, row_scale=None):
    """The zoo's model ``name``, optionally with scaled tables (see :meth:`ModelSpec.scaled`).

    Raises
    ------
    ModelError
        If there is no such model (the message lists the known ones).
    """
    try:
        spec = ZOO[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown model {name!r} (known: {', '.join(ZOO)})") from None
    if max_rows is None and row_scale is None:
        return spec
    return spec.scaled(max_rows=max_rows, row_scale=row_scale)


def pair_indices(n):
    """Row-major pairs ``(i, j)``, ``i < j``, of ``n`` vectors: the order of the ``dot`` interaction's outputs."""
    return np.triu_indices(n, k=1)
