"""A third-party extractor, as another package would ship it through the entry-point group."""
import numpy as np

from featbench.features import Extractor


class MeanColour(Extractor):
    """Mean RGB colour of the image (a plugin example)."""

    name = "mean-colour"
    params = {"scale": 1.0}

    def transform_one(self, image):
        return image.reshape(-1, 3).mean(axis=0) * self.scale
