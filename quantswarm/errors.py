"""One error type for everything a user can fix; the CLI prints it as one line."""


class QuantswarmError(Exception):
    """An error with a message that says what failed and what to do about it."""


class ModelFileError(QuantswarmError):
    """A model file is missing, truncated or not a GGUF."""


class ResultsSchemaError(QuantswarmError):
    """A results file does not match the results-table schema."""


class EngineError(QuantswarmError):
    """llama.cpp could not load a model, start a server or answer a request."""


class DataError(QuantswarmError):
    """A dataset could not be found or a row is malformed."""


class ConfigError(QuantswarmError):
    """A config file or flag value is invalid; the message names the key."""
