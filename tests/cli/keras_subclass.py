"""A subclassed Keras model registered the way users register theirs, for ``nc-prune report --import``."""

from __future__ import annotations

import keras

PACKAGE = "nc_prune_cli_tests"


@keras.saving.register_keras_serializable(package=PACKAGE)
class TinyNet(keras.Model):
    def __init__(self, units: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.fc = keras.layers.Dense(units, name="fc")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x):
        return self.head(self.fc(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
