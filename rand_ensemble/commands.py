"""Image commands: eval, render-test-set, demo."""


def register(sub):
    """Add the image commands to the `rand-ensemble` subparsers."""
