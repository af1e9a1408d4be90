"""The one-line form of an error message, shared by every place that reports an error in a line (the command line,
Hub pushes, data loading)."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first non-blank line of ``error``'s message, stripped; the error's type name when the message is blank.

    Example:

    ```python
    >>> from hf_plasticity.core.messages import first_line
    >>> first_line(ValueError("\\n  Bad value.\\nDetails follow."))
    'Bad value.'
    >>> first_line(KeyError())
    'KeyError'
    ```
    """
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
