"""What a user did on an image: clicks, painted scribbles and a box, in voxel indices of the image array.

``parse_interaction`` reads them from the parameters a viewer sends (JSON lists) and refuses anything it
cannot place exactly, with a message that names the offending entry. ``Interaction.merged`` is the
memory of a session: each new request adds to what the user did before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral

Voxel = tuple[int, int, int]
Box = tuple[Voxel, Voxel]

# The parameter names a viewer uses, with the words a message uses for one entry of each.
_MARK_KEYS = {
    "foreground": "foreground point",
    "background": "background point",
    "foreground_scribbles": "foreground scribble voxel",
    "background_scribbles": "background scribble voxel",
}


class InteractionError(ValueError):
    """An interaction that cannot be used as given; the message says what to change."""


@dataclass(frozen=True)
class Interaction:
    """Clicks, scribbles (every painted voxel) and a box (two opposite corners, both inclusive)."""

    foreground: tuple[Voxel, ...] = ()
    background: tuple[Voxel, ...] = ()
    foreground_scribbles: tuple[Voxel, ...] = ()
    background_scribbles: tuple[Voxel, ...] = ()
    box: Box | None = None

    @property
    def is_empty(self) -> bool:
        """Whether the user has not clicked, painted or drawn anything."""
        return not (self.foreground or self.background or self.foreground_scribbles or self.background_scribbles) and self.box is None

    def merged(self, newer: Interaction) -> Interaction:
        """This interaction followed by ``newer``: marks accumulate, a newer box replaces the old one.

        A voxel the newer interaction marks with the other label loses its older mark, so a user can
        correct an earlier click by clicking the same voxel again as the other kind.
        """
        newer_foreground = set(newer.foreground) | set(newer.foreground_scribbles)
        newer_background = set(newer.background) | set(newer.background_scribbles)
        return Interaction(
            foreground=_union(self.foreground, newer.foreground, newer_background),
            background=_union(self.background, newer.background, newer_foreground),
            foreground_scribbles=_union(self.foreground_scribbles, newer.foreground_scribbles, newer_background),
            background_scribbles=_union(self.background_scribbles, newer.background_scribbles, newer_foreground),
            box=newer.box if newer.box is not None else self.box,
        )


def parse_interaction(params: Mapping[str, object], shape: tuple[int, int, int]) -> Interaction:
    """The interaction in ``params`` on an image of ``shape`` voxels; other keys of ``params`` are ignored.

    Marks are lists of ``[i, j, k]`` voxel indices of the image array (whole numbers given as integers);
    ``box`` is ``[[i, j, k], [i, j, k]]``, two opposite corners in any order. A missing key or ``None``
    means nothing of that kind; repeated voxels count once.
    """
    marks = {key: _voxels(params.get(key), label, shape) for key, label in _MARK_KEYS.items()}
    interaction = Interaction(
        foreground=marks["foreground"],
        background=marks["background"],
        foreground_scribbles=marks["foreground_scribbles"],
        background_scribbles=marks["background_scribbles"],
        box=_box(params.get("box"), shape),
    )
    _check_no_conflict(interaction)
    return interaction


def check_fits(interaction: Interaction, shape: tuple[int, int, int]) -> None:
    """Raise InteractionError unless every mark and box corner lies in the image and no voxel is marked both ways."""
    for key, label in _MARK_KEYS.items():
        voxels: tuple[Voxel, ...] = getattr(interaction, key)
        for number, voxel in enumerate(voxels, start=1):
            _check_inside(voxel, f"{label} {number} {_show(voxel)}", shape)
    if interaction.box is not None:
        for number, corner in enumerate(interaction.box, start=1):
            _check_inside(corner, f"box corner {number} {_show(corner)}", shape)
    _check_no_conflict(interaction)


def _check_no_conflict(interaction: Interaction) -> None:
    both = (set(interaction.foreground) | set(interaction.foreground_scribbles)) & (
        set(interaction.background) | set(interaction.background_scribbles)
    )
    if both:
        voxel = min(both)
        raise InteractionError(f"voxel {_show(voxel)} is marked both foreground and background: mark it as one or the other")


def show_shape(shape: Sequence[int]) -> str:
    """A shape as a message writes it, e.g. 256×256×176."""
    return "×".join(str(size) for size in shape)


def _union(older: tuple[Voxel, ...], newer: tuple[Voxel, ...], overruled: set[Voxel]) -> tuple[Voxel, ...]:
    """Older voxels not overruled, then the newer ones, each once, in the order they came."""
    return tuple(dict.fromkeys([voxel for voxel in older if voxel not in overruled] + list(newer)))


def _voxels(value: object, label: str, shape: tuple[int, int, int]) -> tuple[Voxel, ...]:
    if value is None:
        return ()
    entries = _as_list(value, f"the {label}s", "[[i, j, k], ...]")
    return tuple(dict.fromkeys(_voxel(entry, f"{label} {number}", shape) for number, entry in enumerate(entries, start=1)))


def _box(value: object, shape: tuple[int, int, int]) -> Box | None:
    if value is None:
        return None
    corners = _as_list(value, "the box", "[[i, j, k], [i, j, k]]")
    if len(corners) != 2:
        raise InteractionError(f"the box must be two opposite corners [[i, j, k], [i, j, k]], got {len(corners)} entries: {value!r}")
    first, second = (_voxel(corner, f"box corner {number}", shape) for number, corner in enumerate(corners, start=1))
    low = (min(first[0], second[0]), min(first[1], second[1]), min(first[2], second[2]))
    high = (max(first[0], second[0]), max(first[1], second[1]), max(first[2], second[2]))
    return low, high


def _voxel(entry: object, label: str, shape: tuple[int, int, int]) -> Voxel:
    coordinates = _as_list(entry, label, "[i, j, k]")
    if len(coordinates) != 3:
        raise InteractionError(f"{label} {entry!r} must be three voxel indices [i, j, k], not {len(coordinates)}")
    indices = []
    for coordinate in coordinates:
        # bool is an Integral too, but a true/false where an index belongs is a caller's mistake.
        if isinstance(coordinate, bool) or not isinstance(coordinate, Integral):
            raise InteractionError(f"{label} {entry!r}: {coordinate!r} is not a voxel index; indices are whole numbers written as integers")
        indices.append(int(coordinate))
    voxel = (indices[0], indices[1], indices[2])
    _check_inside(voxel, f"{label} {_show(voxel)}", shape)
    return voxel


def _as_list(value: object, label: str, form: str) -> Sequence[object]:
    # Only JSON arrays (and the tuples Python callers write for them): a string or a mapping is a sequence too.
    if not isinstance(value, list | tuple):
        raise InteractionError(f"{label} must be a list {form}, got {type(value).__name__} {value!r}")
    return value


def _check_inside(voxel: Voxel, label: str, shape: tuple[int, int, int]) -> None:
    if not all(0 <= index < size for index, size in zip(voxel, shape, strict=True)):
        ranges = ", ".join(f"0–{size - 1}" for size in shape)
        raise InteractionError(f"{label} lies outside the image of {show_shape(shape)} voxels (indices run {ranges})")


def _show(voxel: Iterable[int]) -> str:
    return "(" + ", ".join(str(index) for index in voxel) + ")"
