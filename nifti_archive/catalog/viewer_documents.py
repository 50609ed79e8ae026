"""The viewer's documents: autoloader presets and saved viewer states (shared links).

Both are JSON a browser sends; both are validated here, field by field, with errors that name
the field, before anything is stored. A preset names files by pattern (resolved per study);
a saved state names them by id (checked against the project when the link is made).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nifti_archive.errors import InvalidValue, PatternError
from nifti_archive.query.patterns import FilePattern, parse_file_pattern

LAYOUTS = ("1x1", "1x2", "2x1", "2x2", "1x3")
COLORMAPS = ("gray", "red", "green", "blue", "hot", "winter", "warm", "cool", "plasma", "viridis", "inferno", "actc")
# CT windows (width, level) behind keys 1-6, in Hounsfield units.
CT_WINDOWS = {
    1: ("brain", 80, 40),
    2: ("subdural", 200, 75),
    3: ("stroke", 40, 40),
    4: ("soft tissue", 400, 40),
    5: ("lung", 1500, -600),
    6: ("bone", 2000, 600),
}
PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,63}")
MAX_VIEWPORTS = 4
MAX_OVERLAYS = 4


class DocumentError(InvalidValue):
    """A preset or viewer state that cannot be used; the message starts with the field's path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Display:
    colormap: str = "gray"
    opacity: float = 1.0
    # (min, max) intensities shown, or None for the image's own robust range.
    window: tuple[float, float] | None = None


@dataclass(frozen=True)
class PresetLayer:
    pattern: FilePattern
    display: Display


@dataclass(frozen=True)
class PresetViewport:
    base: PresetLayer
    overlays: tuple[PresetLayer, ...]


@dataclass(frozen=True)
class Preset:
    layout: str
    viewports: tuple[PresetViewport, ...]


def _object(document: Any, field: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise DocumentError(field, "must be an object")
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise DocumentError(field, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return document


def _list(document: Any, field: str, most: int) -> list[Any]:
    if not isinstance(document, list) or not 1 <= len(document) <= most:
        raise DocumentError(field, f"must be a list of 1 to {most} entries")
    return document


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DocumentError(field, "must be a number")
    return float(value)


def _window(value: Any, field: str) -> tuple[float, float] | None:
    """``null``, ``[min, max]`` or a CT preset number 1-6."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in CT_WINDOWS:
            raise DocumentError(field, f"CT presets are numbered 1 to {len(CT_WINDOWS)}")
        _name, width, level = CT_WINDOWS[value]
        return (level - width / 2, level + width / 2)
    if not isinstance(value, list) or len(value) != 2:
        raise DocumentError(field, "must be [min, max], a CT preset number 1-6, or null")
    low, high = _number(value[0], f"{field}[0]"), _number(value[1], f"{field}[1]")
    if low >= high:
        raise DocumentError(field, "min must be below max")
    return (low, high)


def _display(document: dict[str, Any], field: str) -> Display:
    colormap = document.get("colormap", "gray")
    if colormap not in COLORMAPS:
        raise DocumentError(f"{field}.colormap", f"unknown colormap {colormap!r}; known: {', '.join(COLORMAPS)}")
    opacity = _number(document.get("opacity", 1.0), f"{field}.opacity")
    if not 0.0 <= opacity <= 1.0:
        raise DocumentError(f"{field}.opacity", "must be between 0 and 1")
    return Display(colormap, opacity, _window(document.get("window"), f"{field}.window"))


def _layout(document: dict[str, Any], viewports: int) -> str:
    layout = document.get("layout", "1x1")
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise DocumentError("layout", f"unknown layout {layout!r}; layouts: {', '.join(LAYOUTS)}")
    rows, columns = (int(n) for n in layout.split("x"))
    if viewports > rows * columns:
        raise DocumentError("viewports", f"layout {layout} has room for {rows * columns} viewport(s), not {viewports}")
    return layout


def _preset_layer(document: Any, field: str) -> PresetLayer:
    document = _object(document, field, {"file", "colormap", "opacity", "window"})
    if not isinstance(document.get("file"), str):
        raise DocumentError(f"{field}.file", "is required: a file pattern such as t1*/s*.nii.gz")
    try:
        pattern = parse_file_pattern(document["file"])
    except PatternError as exc:
        raise DocumentError(f"{field}.file", str(exc)) from None
    return PresetLayer(pattern, _display(document, field))


def parse_preset(document: Any) -> Preset:
    document = _object(document, "preset", {"layout", "viewports"})
    viewports = []
    for index, entry in enumerate(_list(document.get("viewports"), "viewports", MAX_VIEWPORTS)):
        field = f"viewports[{index}]"
        entry = dict(_object(entry, field, {"file", "colormap", "opacity", "window", "overlays"}))
        overlays = entry.pop("overlays", [])
        base = _preset_layer(entry, field)
        layers = tuple(
            _preset_layer(o, f"{field}.overlays[{i}]")
            for i, o in enumerate(_list(overlays, f"{field}.overlays", MAX_OVERLAYS) if overlays else [])
        )
        viewports.append(PresetViewport(base, layers))
    return Preset(_layout(document, len(viewports)), tuple(viewports))


def check_preset_name(name: str) -> str:
    if not PRESET_NAME.fullmatch(name):
        raise InvalidValue(f"invalid preset name {name!r}: up to 64 letters, digits, spaces, '.', '_' or '-'")
    return name


def _matching(pattern: FilePattern, paths: list[str]) -> str | None:
    return next((path for path in sorted(paths) if pattern.matches(path)), None)


def resolve_preset(preset: Preset, paths: list[str]) -> dict[str, Any]:
    """The viewer state a preset gives for a study with these files: the first file (by path)
    matching each pattern; a viewport whose base pattern matches nothing stays empty."""

    def layer(entry: PresetLayer) -> dict[str, Any] | None:
        path = _matching(entry.pattern, paths)
        if path is None:
            return None
        d = entry.display
        return {"path": path, "colormap": d.colormap, "opacity": d.opacity, "window": list(d.window) if d.window else None}

    viewports = []
    for viewport in preset.viewports:
        base = layer(viewport.base)
        overlays = [o for o in (layer(entry) for entry in viewport.overlays) if o] if base else []
        viewports.append({"base": base, "overlays": overlays})
    return {"layout": preset.layout, "viewports": viewports}


@dataclass(frozen=True)
class StateLayer:
    file_id: int
    display: Display


@dataclass(frozen=True)
class ViewerState:
    layout: str
    viewports: tuple[tuple[StateLayer, ...], ...]
    # Where the crosshair stood, in scanner millimetres (RAS), or None for the volume's centre.
    crosshair: tuple[float, float, float] | None

    def file_ids(self) -> set[int]:
        return {layer.file_id for viewport in self.viewports for layer in viewport}

    def as_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "crosshair": list(self.crosshair) if self.crosshair else None,
            "viewports": [
                [
                    {"file_id": layer.file_id, "colormap": layer.display.colormap, "opacity": layer.display.opacity,
                     "window": list(layer.display.window) if layer.display.window else None}
                    for layer in viewport
                ]
                for viewport in self.viewports
            ],
        }


def _state_layer(document: Any, field: str) -> StateLayer:
    document = _object(document, field, {"file_id", "colormap", "opacity", "window"})
    file_id = document.get("file_id")
    if isinstance(file_id, bool) or not isinstance(file_id, int) or file_id <= 0:
        raise DocumentError(f"{field}.file_id", "must be a file's id")
    return StateLayer(file_id, _display(document, field))


def parse_state(document: Any) -> ViewerState:
    """A viewer state: ``viewports`` is a list of layer lists, the first layer the base image."""
    document = _object(document, "state", {"layout", "viewports", "crosshair"})
    viewports = tuple(
        tuple(_state_layer(layer, f"viewports[{i}][{j}]") for j, layer in enumerate(_list(entry, f"viewports[{i}]", 1 + MAX_OVERLAYS)))
        for i, entry in enumerate(_list(document.get("viewports"), "viewports", MAX_VIEWPORTS))
    )
    crosshair = document.get("crosshair")
    if crosshair is not None:
        if not isinstance(crosshair, list) or len(crosshair) != 3:
            raise DocumentError("crosshair", "must be [x, y, z] in millimetres, or null")
        crosshair = tuple(_number(v, f"crosshair[{i}]") for i, v in enumerate(crosshair))
    return ViewerState(_layout(document, len(viewports)), viewports, crosshair)
