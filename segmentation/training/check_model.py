"""Whether a TorchScript model loads and runs: ``python -I check_model.py MODEL.ts SHAPE``.

Run with the segmentation assistant's Python (the one that will serve the model), never with the
archive's. SHAPE is the input's, comma-separated (``1,1,32,32,32``): the model runs once, on CPU,
on zeros of that shape, and must give (1, C, I, J, K): one item, at least one channel, the input's
grid (the assistant lays the output on the image as it is).

Its standard output is its protocol: one JSON line, ``{"ok": true, "output_shape": [...]}`` or
``{"ok": false, "error": "..."}`` (exit status 1), read by segmentation/model_registry.py.
"""

from __future__ import annotations

import json
import sys

import torch


def check(path: str, shape: list[int]) -> list[int]:
    model = torch.jit.load(path, map_location="cpu")
    model.eval()
    with torch.no_grad():
        output = model(torch.zeros(shape))
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"the model returns {type(output).__name__}, not a tensor")
    if output.dim() != 5 or output.shape[0] != 1 or output.shape[1] < 1 or list(output.shape[2:]) != shape[2:]:
        expected = f"(1, channels, {', '.join(str(n) for n in shape[2:])})"
        raise ValueError(f"the model returns shape {list(output.shape)} for an input of {shape}; expected {expected}")
    if not bool(torch.isfinite(output).all()):
        raise ValueError("the model returns values that are not finite on an image of zeros")
    return list(output.shape)


def main() -> int:
    path, shape_text = sys.argv[1], sys.argv[2]
    try:
        shape = check(path, [int(n) for n in shape_text.split(",")])
    # Whatever a foreign file makes torch raise is the answer, not a crash of the checker.
    except Exception as exc:  # noqa: BLE001
        sys.stdout.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    sys.stdout.write(json.dumps({"ok": True, "output_shape": shape, "torch": torch.__version__}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
