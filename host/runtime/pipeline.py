"""A ranking pipeline as the runtime takes it: ``rm-small:4096:512,rm-large:512:64``.

Each stage is ``MODEL:ITEMS:K``: the model scores ``ITEMS`` candidates (the first stage: at most, a query's
candidates; a later stage: exactly the previous stage's ``K``) and keeps the ``K`` best. The final stage's ``K`` is
the ranking's depth. The same text drives every backend, so the CPU baseline, the fast model and the RTL rank the
same candidates.
"""

from dataclasses import dataclass

__all__ = ["PipelineError", "StageSpec", "parse_pipeline", "stage_items"]


class PipelineError(ValueError):
    """A pipeline text or a query does not fit the pipeline; the message names the stage and the value."""


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``model`` scores ``items`` candidates and keeps the ``k`` best."""

    model: str
    items: int
    k: int

    def __str__(self):
        return f"{self.model}:{self.items}:{self.k}"


def parse_pipeline(text):
    """Read ``MODEL:ITEMS:K[,MODEL:ITEMS:K...]`` into a tuple of :class:`StageSpec`.

    Raises
    ------
    PipelineError
        On an empty stage, a field that is not a positive integer, ``K`` above ``ITEMS``, or a stage whose
        ``ITEMS`` is not the previous stage's ``K`` (each naming the stage).
    """
    stages = []
    for number, part in enumerate(str(text).split(",")):
        fields = part.strip().split(":")
        if len(fields) != 3 or not fields[0]:
            raise PipelineError(f"Pipeline {text!r}: stage {number} {part.strip()!r} is not MODEL:ITEMS:K")
        model, items, k = fields
        values = []
        for name, value in (("ITEMS", items), ("K", k)):
            if not (value.isascii() and value.isdecimal()) or int(value) < 1:
                raise PipelineError(f"Pipeline {text!r}: stage {number} ({model}): {name} {value!r} is not a "
                                    "positive integer")
            values.append(int(value))
        items, k = values
        if k > items:
            raise PipelineError(f"Pipeline {text!r}: stage {number} ({model}) keeps K = {k} of {items} items")
        if stages and items != stages[-1].k:
            raise PipelineError(f"Pipeline {text!r}: stage {number} ({model}) scores {items} items, but stage "
                                f"{number - 1} keeps {stages[-1].k}")
        stages.append(StageSpec(model, items, k))
    return tuple(stages)


def stage_items(stages, size):
    """Items each stage scores for a query of ``size`` candidates (the first stage: all of them).

    Raises
    ------
    PipelineError
        If the query has more candidates than the first stage's ``ITEMS`` or fewer than its ``K``.
    """
    first = stages[0]
    if not first.k <= size <= first.items:
        raise PipelineError(f"A query of {size} candidates does not fit stage 0 ({first}): it scores "
                            f"{first.k} to {first.items}")
    return [size, *(stage.items for stage in stages[1:])]
