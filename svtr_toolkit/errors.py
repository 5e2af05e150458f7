"""The one exception type the command-line tools turn into a one-line message."""


class ToolkitError(Exception):
    """A problem with the user's input or environment.

    The command-line entry points print ``error: <message>`` on one line and exit
    non-zero instead of showing a traceback; the message must name the problem
    (the file, the tensor, the flag) well enough to act on.
    """


def last_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's message, or its type when the message is empty
    (TVM raises some errors, e.g. on an interrupt, with no text)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type when the message is empty."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(exc).__name__


_INTERRUPTS: list = []  # the Ctrl-C / SIGTERM this process was sent (recorded by cli.run_cli's handlers)


def record_interrupt(exc: BaseException) -> BaseException:
    _INTERRUPTS.append(exc)
    return exc


def pending_interrupt() -> BaseException | None:
    """The interrupt this process received, for code that catches a library's own error and must
    re-raise the interrupt instead of reporting a failure: TVM turns a signal that arrives inside
    its C++ code into a TVMError, sometimes one with no message."""
    return _INTERRUPTS[-1] if _INTERRUPTS else None
