"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class FeatbenchError(Exception):
    """Bad input from the user (a missing file, an unknown name, a malformed suite)."""


class WeightsUnavailableError(FeatbenchError):
    """No pretrained weights could be found for a model; the message says how to supply them."""
