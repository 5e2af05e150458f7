"""svtr_toolkit.errors: the one-line messages made from other libraries' exceptions."""


def test_empty_exception_message_is_formatted():
    from svtr_toolkit.errors import first_line, last_line

    assert last_line(RuntimeError()) == "RuntimeError" and first_line(RuntimeError("\n")) == "RuntimeError"
    assert last_line(RuntimeError("a\nb\n")) == "b"
