"""Issue 24, item 8: an engine whose build description was edited (another input shape, a key
removed) is refused with one line instead of failing inside TVM's VM or with a KeyError.

The engines are real builds whose appended description is rewritten, as an editor would."""
import json
import shutil

import pytest

from cli_runs import run_main
from svtr_toolkit.engine_file import (PRECISIONS, _FOOTER, _FOOTER_MAGIC, _description_span, description_digest,
                                      read_engine_metadata)


def rewrite_description(src, dst, edit, redigest=False):
    """``dst``: the engine ``src`` with its description passed through ``edit`` (and, with
    ``redigest``, its digest made to match again, to reach the checks behind it)."""
    meta = read_engine_metadata(str(src))
    edit(meta)
    if redigest:
        meta["description_sha256"] = description_digest(meta)
    blob = json.dumps(meta, sort_keys=True).encode()
    image = open(src, "rb").read()[:_description_span(str(src))[0]]
    with open(dst, "wb") as fh:
        fh.write(image + blob + _FOOTER.pack(len(blob), _FOOTER_MAGIC))
    return dst


def parity(engine, model):
    return run_main("parity_check", "--engine", engine, "--model_path", model)


def test_an_engine_records_its_descriptions_digest(built):
    meta = read_engine_metadata(built[0])
    assert meta["description_sha256"] == description_digest(meta)


def test_another_input_shape_written_into_the_description_is_refused(built, tmp_path):
    path, meta = built
    edited = rewrite_description(path, tmp_path / "shape.so", lambda m: m.update(input_shape=[4, 3, 8, 16]))
    ran = parity(edited, meta["model_path"])
    assert ran.code == 2 and ran.error == (f"error: {edited} cannot be trusted: its build description was edited after "
                                           f"the build (it does not match its recorded digest); rebuild it")


@pytest.mark.parametrize("edit, problem", [
    (lambda m: m.pop("target"), "its build description has no 'target'"),
    (lambda m: m.update(target={"mcpu": "x"}),
     "its build description's 'target' is {'mcpu': 'x'}, not a target with a 'kind'"),
    (lambda m: m.update(input_shape=[2, 0, 8, 16]),
     "its build description's 'input_shape' is [2, 0, 8, 16], not a list of positive integers"),
    (lambda m: m.update(precision="int8"), f"its build description's 'precision' is 'int8', not {' or '.join(PRECISIONS)}"),
    (lambda m: m.pop("input_name"), "its build description has no 'input_name'"),
])
def test_a_description_missing_what_the_runtime_reads_is_refused(built, tmp_path, edit, problem):
    """Even with a digest made to match: what the runtime reads is checked for itself."""
    edited = rewrite_description(built[0], tmp_path / "e.so", edit, redigest=True)
    ran = parity(edited, built[1]["model_path"])
    assert ran.code == 2 and ran.error == f"error: {edited} cannot be trusted: {problem}; rebuild it"


def test_an_edited_description_from_before_the_digest_fails_in_one_line(built, tmp_path):
    """An engine built before descriptions carried a digest: the VM's own shape check, as one line."""
    def older_and_edited(meta):
        meta.pop("description_sha256")
        meta["input_shape"] = [4, 3, 8, 16]

    edited = rewrite_description(built[0], tmp_path / "old.so", older_and_edited)
    ran = parity(edited, built[1]["model_path"])
    assert ran.code == 2 and ran.error.startswith("error: the engine failed during a batch (")
    assert ran.error.endswith("if its build description was edited (input x:[4, 3, 8, 16]), rebuild it")


def test_an_engine_copied_elsewhere_keeps_a_valid_description(built, tmp_path):
    copy = shutil.copy(built[0], tmp_path / "copy.so")
    ran = parity(copy, built[1]["model_path"])
    assert ran.code == 0 and "argmax agreement 100.00%" in ran.out, ran.err
