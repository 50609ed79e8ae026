"""Weight-free interactive segmentation: region growing from clicks, graph cuts from scribbles or a box.

Numpy and scipy only, so that the MONAI Label app can use it from its own environment. Voxel indices
are those of the image array, in its axis order; windows around the interaction keep a call on a
256×256×176 volume well under a second.
"""

from segmentation.interactive.interactions import Interaction, InteractionError, parse_interaction
from segmentation.interactive.tools import DESCRIPTIONS, Tool, segment

__all__ = ["DESCRIPTIONS", "Interaction", "InteractionError", "Tool", "parse_interaction", "segment"]
