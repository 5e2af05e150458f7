"""svtr_toolkit.bench.flags: the benchmark's batch sweep and NAME=PATH engine values."""
import pytest

from svtr_toolkit import bench
from svtr_toolkit.errors import ToolkitError


def test_parse_batches_sorts_and_dedups():
    assert bench.parse_batches("32,1, 8,32,64") == [1, 8, 32, 64]


@pytest.mark.parametrize("text", ["", "a,2", "0,8", "-1", ","])
def test_parse_batches_rejects_bad_lists(text):
    with pytest.raises(ToolkitError, match="--batches"):
        bench.parse_batches(text)


def test_parse_engine_specs():
    assert bench.parse_engine_specs(["fp32=a.so", "fp16 = dir/b=c.so"]) == [("fp32", "a.so"), ("fp16", "dir/b=c.so")]
    assert bench.parse_engine_specs(None) == []


@pytest.mark.parametrize("spec", ["a.so", "=a.so", "fp32=", "fp32"])
def test_parse_engine_specs_rejects_malformed(spec):
    with pytest.raises(ToolkitError, match="NAME=PATH"):
        bench.parse_engine_specs([spec])


def test_parse_engine_specs_takes_a_name_twice_but_not_an_engine():
    assert bench.parse_engine_specs(["x=a.so", "x=b.so"]) == [("x", "a.so"), ("x", "b.so")]
    with pytest.raises(ToolkitError, match="x=a.so is given twice"):
        bench.parse_engine_specs(["x=a.so", "x=a.so"])


def test_headline_batch_is_in_the_default_sweep():
    assert bench.HEADLINE_BATCH in bench.DEFAULT_BATCHES
