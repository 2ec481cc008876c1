"""The one error type for bad input, and its one-line message format."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a file, a key or a config value. Its message is one line, naming the source."""


def input_error(source: object, problem: str, *, expected: object = None, found: object = None) -> InputError:
    """Build an :class:`InputError` reading ``<source>: <problem> (expected <e>, got <f>)``.

    ``source`` is a file name, a config key or a row ("truth row 17"); paths are shown as given.
    """
    detail = ""
    if expected is not None and found is not None:
        detail = f" (expected {expected}, got {found})"
    elif expected is not None:
        detail = f" (expected {expected})"
    elif found is not None:
        detail = f" (got {found})"
    message = f"{source}: {problem}{detail}".replace("\n", " ")
    return InputError(message)
