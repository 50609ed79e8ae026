"""Intensity likelihoods learned from marked voxels: smoothed histograms, and the cost of a label for each voxel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

_BINS = 64
# Share of the likelihood spread evenly over all intensities: an intensity never seen among the marks is
# unlikely, not impossible, so one stray voxel cannot force a label however strong the other evidence.
_UNSEEN_SHARE = 0.02
# Share of the background's likelihood taken from the whole window rather than from the background marks.
_IMAGE_SHARE = 0.3
# Percentiles of the image that bound the histograms: the few brightest and darkest voxels (vessels,
# artefacts) would otherwise stretch the bins so wide that the structure's intensities share one bin.
_RANGE_PERCENTILES = (0.5, 99.5)
# Enough voxels to place the percentiles well; taking every n-th voxel keeps large windows cheap.
_RANGE_SAMPLE = 200_000


@dataclass(frozen=True)
class IntensityRange:
    """The intensities the histograms cover; values beyond fall into the end bins."""

    low: float
    high: float

    @classmethod
    def of(cls, image: NDArray[np.float32], *marked: Samples) -> IntensityRange:
        """The range of most of ``image``'s intensities and of the ``marked`` ones.

        A small structure is too few voxels of a window to move its percentiles: without the marked
        intensities, the structure's could all fall into an end bin, together with the brightest of the rest.
        """
        sample = image.ravel()[:: max(1, image.size // _RANGE_SAMPLE)]
        low, high = np.percentile(sample, _RANGE_PERCENTILES)
        for samples in marked:
            low, high = min(low, float(samples.values.min())), max(high, float(samples.values.max()))
        return cls(float(low), float(max(high, low + 1e-6 * max(1.0, abs(low)))))

    def bins(self, values: NDArray[np.float32]) -> NDArray[np.intp]:
        """The histogram bin of each value."""
        scaled = (values - self.low) * (_BINS / (self.high - self.low))
        found: NDArray[np.intp] = np.clip(scaled, 0, _BINS - 1).astype(np.intp)
        return found


@dataclass(frozen=True)
class Samples:
    """Intensities to learn from, each with the weight of its evidence (a painted voxel weighs 1)."""

    values: NDArray[np.float32]
    weights: NDArray[np.float64]

    @classmethod
    def painted(cls, values: NDArray[np.float32]) -> Samples:
        """Values that weigh one each."""
        return cls(values, np.ones(len(values)))

    def __add__(self, other: Samples) -> Samples:
        return Samples(np.concatenate([self.values, other.values]), np.concatenate([self.weights, other.weights]))

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class IntensityModel:
    """How likely each intensity is for one label: -log of a smoothed histogram of the label's marked voxels."""

    range: IntensityRange
    costs_by_bin: NDArray[np.float64]

    @classmethod
    def foreground(cls, samples: Samples, intensities: IntensityRange, noise: float) -> IntensityModel:
        """The model of the structure from its marked ``samples`` (at least one), in an image with noise of standard deviation ``noise``."""
        return cls._of(_density(samples, intensities, noise), intensities)

    @classmethod
    def background(cls, samples: Samples, image: NDArray[np.float32], intensities: IntensityRange, noise: float) -> IntensityModel:
        """The model of the surroundings: their marked ``samples`` (at least one), mixed with all of ``image``.

        The background is everything but the structure, most of it never marked: an intensity that
        neither kind of mark has shown (air beside a lesion the user marked on tissue) is far likelier
        to be more background than structure, and the image as a whole says how likely.
        """
        whole = Samples.painted(image.ravel()[:: max(1, image.size // _RANGE_SAMPLE)])
        mixed = (1 - _IMAGE_SHARE) * _density(samples, intensities, noise) + _IMAGE_SHARE * _density(whole, intensities, noise)
        return cls._of(mixed, intensities)

    @classmethod
    def _of(cls, density: NDArray[np.float64], intensities: IntensityRange) -> IntensityModel:
        with_unseen = (1 - _UNSEEN_SHARE) * density + _UNSEEN_SHARE / _BINS
        # Costs in nats relative to knowing nothing (every bin alike), so that the smoothness weight reads the same whatever the bins.
        return cls(intensities, -np.log(with_unseen * _BINS))

    def costs(self, image: NDArray[np.float32]) -> NDArray[np.float32]:
        """The cost of giving each voxel of ``image`` this model's label."""
        return self.costs_by_bin[self.range.bins(image)].astype(np.float32)


def _density(samples: Samples, intensities: IntensityRange, noise: float) -> NDArray[np.float64]:
    """A kernel density estimate of ``samples`` on the bins, summing to 1.

    Silverman's bandwidth: a short stroke gives a handful of values, and their raw histogram would call
    every gap between them impossible. Never narrower than the noise: a handful of values can lie
    closer together than the structure's voxels do.
    """
    counts = np.bincount(intensities.bins(samples.values), samples.weights, minlength=_BINS)
    mean = np.average(samples.values, weights=samples.weights)
    spread = float(np.sqrt(np.average((samples.values - mean) ** 2, weights=samples.weights)))
    bin_width = (intensities.high - intensities.low) / _BINS
    bandwidth = max(1.0, max(1.06 * spread * float(samples.weights.sum()) ** -0.2, noise) / bin_width)
    density = np.asarray(ndimage.gaussian_filter1d(counts, bandwidth, mode="constant"), dtype=np.float64)
    normalised: NDArray[np.float64] = density / float(density.sum())
    return normalised
