"""The one exception type the command-line tools turn into a one-line message."""


class ToolkitError(Exception):
    """A problem with the user's input or environment.

    The command-line entry points print ``error: <message>`` on one line and exit
    non-zero instead of showing a traceback; the message must name the problem
    (the file, the tensor, the flag) well enough to act on.
    """
