"""Errors in what the user gave us (data, config, checkpoint): reported as one line, not a traceback."""


class UserError(ValueError):
    """Base of errors caused by the user's input; the CLI prints the message and exits with status 1."""


class DataError(UserError):
    """Bad input data: missing, corrupt, wrong checksum, empty or too small."""


class ConfigError(UserError):
    """A configuration value that cannot work (e.g. n_embd not divisible by n_head)."""


class CheckpointError(UserError):
    """A file that is not a usable lit-gpt-mini checkpoint."""


class ParseError(ConfigError):
    """A command line or config file that cannot be parsed; the CLI exits with status 2, like argparse."""


class StorageError(UserError):
    """A file that could not be written: a read-only directory, a full disk, a file size limit."""


class DivergenceError(UserError):
    """Training diverged: a loss is NaN or infinite (usually a learning rate too high for the model)."""
