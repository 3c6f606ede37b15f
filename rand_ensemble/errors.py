"""The project's own error type: the CLI prints it as one line, without a traceback."""


class RandEnsembleError(ValueError):
    """Bad input or configuration, with a message that says what was wrong."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same cleanup runs (the CLI exits 143, not 130)."""
