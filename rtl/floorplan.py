"""Where the systolic array's hard multipliers go on the FPGA.

On the ECP5 the multipliers (MULT18X18D) sit in a few horizontal rows across the whole die: the 85F has three,
at nextpnr's Y = 10, 34 and 58, with 52 multipliers each between X = 4 and X = 119. The array's processing
elements talk only to their neighbours (activations to the right, partial sums down, weights up), but an
analytic placer that sees 124 multipliers of one design and three rows of sites scatters the array's rows and
columns along the rows: neighbours end up tens of tiles apart and every partial sum crosses the die (the
unconstrained `small` engine did not route, see ``docs/mlp.md``). :func:`array_dsp_sites` lays the array out
instead, and the PE fixes its block there (nextpnr's ``BEL`` attribute):

* the array's columns go, ``group`` at a time, to one row of multipliers each (``group`` is as many columns as
  the row holds whole: 3 of 16 PEs in a row of 52);
* within a row of multipliers the columns of the group are interleaved, PE row by PE row: sites
  ``(r, c0), (r, c0 + 1), (r, c0 + 2), (r + 1, c0), ...`` left to right, so an activation moves to the
  neighbouring site, a partial sum ``group`` sites on, and the columns' used sites are centred in the row;
* the activations from the last column of one group to the first of the next change rows of multipliers at
  the same X.

A device without a table here (or an array that does not fit the scheme) gets no constraints: the placer
chooses, as before.
"""

from .ecp5 import is_ecp5

__all__ = ["ECP5_DSP_SITES", "array_dsp_sites", "dsp_rows"]


def _ecp5_85_row(y):
    # A DSP block every 9 columns (one wider step across the centre), with multipliers MULT18_0 and MULT18_1 in
    # its first two columns and MULT18_4 and MULT18_5 in its fifth and sixth.
    starts = [4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114]
    return [f"X{x + dx}/Y{y}/MULT18_{k}" for x in starts for dx, k in ((0, 0), (1, 1), (4, 4), (5, 5))]


#: MULT18X18D sites (nextpnr BEL names) of each ECP5 device, by row of multipliers, each row ordered by X. The
#: 85F's were listed by placing 156 multipliers with nextpnr-ecp5 (``--85k``) and reading back their BELs;
#: ``tests/test_floorplan.py`` places every one of them to check that the names exist.
ECP5_DSP_SITES = {
    device: [_ecp5_85_row(y) for y in (10, 34, 58)]
    for device in ("LFE5U-85F", "LFE5UM-85F", "LFE5UM5G-85F")
}


def dsp_rows(platform):
    """The rows of multiplier sites of ``platform``'s device (:data:`ECP5_DSP_SITES`), or None if unknown."""
    return ECP5_DSP_SITES.get(getattr(platform, "device", None)) if is_ecp5(platform) else None


def array_dsp_sites(rows, cols, dsp_pes, site_rows):
    """``{(r, c): site}`` for the processing elements with hard multipliers (the first ``dsp_pes``, row-major) of
    a ``rows x cols`` array, laid out over ``site_rows`` as the module documentation describes; ``{}`` if
    ``site_rows`` is None or the array's columns do not fit (then the placer chooses).

    Parameters
    ----------
    rows, cols : int
        Array shape.
    dsp_pes : int
        How many PEs, numbered row-major, have hard multipliers.
    site_rows : list of list of str, or None
        Multiplier sites by row, each row ordered by X (:func:`dsp_rows`).
    """
    if not site_rows:
        return {}
    per_row = min(len(sites) for sites in site_rows)
    group = per_row // rows
    if group == 0 or -(-cols // group) > len(site_rows):
        return {}
    placed = {}
    for c in range(cols):
        row, lane = divmod(c, group)
        width = min(group, cols - row * group)
        sites = site_rows[row]
        first = (len(sites) - rows * width) // 2
        for r in range(rows):
            if r * cols + c < dsp_pes:
                placed[r, c] = sites[first + r * width + lane]
    return placed
