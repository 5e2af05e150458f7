"""Checkpoints (svtr_toolkit.prepare.checkpoint): the state dict checked tensor by tensor,
.pdparams read by a restricted unpickler, tar archives read in memory and refused when unsafe,
downloads that leave nothing behind when they fail."""
import io
import os
import pickle
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from cli_runs import run_main
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.prepare import checkpoint


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# ---------------------------------------------------------------------- state dicts and .pdparams
def test_state_dict_validation_names_the_tensors(spec):
    params = {name: np.zeros(shape, np.float32) for name, shape in spec}
    assert list(checkpoint.validate_state_dict(dict(params), spec, "ck")) == [n for n, _ in spec]

    missing = dict(params)
    del missing["backbone.blocks2.3.mlp.fc1.weight"]
    with pytest.raises(ToolkitError, match=r"1 missing: backbone\.blocks2\.3\.mlp\.fc1\.weight"):
        checkpoint.validate_state_dict(missing, spec, "ck")

    extra = dict(params, **{"backbone.len_conv.weight": np.zeros((3,), np.float32)})
    with pytest.raises(ToolkitError, match=r"1 unexpected: backbone\.len_conv\.weight"):
        checkpoint.validate_state_dict(extra, spec, "ck")

    bad = dict(params, **{"head.fc.weight": np.zeros((192, 6625), np.float32)})
    with pytest.raises(ToolkitError, match=r"mis-shaped: head\.fc\.weight \[192, 6625\] \(model \[192, 37\]\)") as exc:
        checkpoint.validate_state_dict(bad, spec, "ck")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"not a pickle at all" * 10])
def test_corrupt_pdparams(tmp_path, content):
    path = tmp_path / "best_accuracy.pdparams"
    path.write_bytes(content)
    ckpt = checkpoint.read_checkpoint(path)
    with pytest.raises(ToolkitError, match="best_accuracy.pdparams: not a readable .pdparams"):
        checkpoint.parse_pdparams(ckpt.data, ckpt.source)


def test_truncated_pdparams(tmp_path, ckpt_file):
    data = ckpt_file.read_bytes()
    with pytest.raises(ToolkitError, match="cut.pdparams: not a readable .pdparams"):
        checkpoint.parse_pdparams(data[: len(data) // 2], str(tmp_path / "cut.pdparams"))


def test_pdparams_with_foreign_objects_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with pytest.raises(ToolkitError, match="refusing to load"):
        checkpoint.parse_pdparams(pickle.dumps({"a": Evil()}), "evil.pdparams")
    assert not (tmp_path / "pwned").exists()


def _tar_with(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_tar_checkpoint_reads_the_member(tmp_path, ckpt_file):
    data = ckpt_file.read_bytes()
    tar = _tar_with(tmp_path / checkpoint.CHECKPOINT_TAR, [
        ("rec_svtr_tiny_none_ctc_en_train/train.log", b"log"),
        (checkpoint.CHECKPOINT_MEMBER, data),
    ])
    for arg in (tar, tmp_path):  # the archive, or the folder holding it
        ckpt = checkpoint.read_checkpoint(arg)
        assert ckpt.data == data and ckpt.source.endswith("!" + checkpoint.CHECKPOINT_MEMBER)
    assert listing(tmp_path) == [checkpoint.CHECKPOINT_TAR]  # read in memory: nothing extracted to disk


def test_corrupt_or_unsafe_tars(tmp_path, ckpt_file):
    data = ckpt_file.read_bytes()
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar" * 100)
    with pytest.raises(ToolkitError, match="garbage.tar: not a readable tar archive"):
        checkpoint.read_checkpoint(garbage)

    good = _tar_with(tmp_path / "good.tar", [(checkpoint.CHECKPOINT_MEMBER, data)])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[: len(data) // 2])
    with pytest.raises(ToolkitError, match="cut.tar: (not a readable tar archive|member .* is truncated)"):
        checkpoint.read_checkpoint(cut)

    empty = _tar_with(tmp_path / "empty.tar", [("readme.txt", b"hi")])
    with pytest.raises(ToolkitError, match="empty.tar: no best_accuracy.pdparams inside"):
        checkpoint.read_checkpoint(empty)

    evil = _tar_with(tmp_path / "evil.tar", [("../best_accuracy.pdparams", data)])
    with pytest.raises(ToolkitError, match="evil.tar: refusing unsafe member path"):
        checkpoint.read_checkpoint(evil)

    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo(checkpoint.CHECKPOINT_MEMBER)
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(ToolkitError, match="link.tar: member .* is not a regular file"):
        checkpoint.read_checkpoint(link)

    bad_member = _tar_with(tmp_path / "badmember.tar", [(checkpoint.CHECKPOINT_MEMBER, b"\x80\x04junk")])
    ckpt = checkpoint.read_checkpoint(bad_member)
    with pytest.raises(ToolkitError, match="badmember.tar!.*not a readable .pdparams"):
        checkpoint.parse_pdparams(ckpt.data, ckpt.source)


# ---------------------------------------------------------------------- download (file:// URL)
def test_download_from_file_url(tmp_path, ckpt_file):
    src = _tar_with(tmp_path / "src.tar", [(checkpoint.CHECKPOINT_MEMBER, ckpt_file.read_bytes())])
    dest_dir = tmp_path / "dl"
    got = checkpoint.download_checkpoint(dest_dir / checkpoint.CHECKPOINT_TAR, url=src.as_uri())
    assert got.read_bytes() == src.read_bytes()
    assert listing(dest_dir) == [checkpoint.CHECKPOINT_TAR]
    mtime = got.stat().st_mtime_ns
    checkpoint.download_checkpoint(got, url="file:///nonexistent/x.tar")  # present: not fetched again
    assert got.stat().st_mtime_ns == mtime


def test_download_failures_are_clean(tmp_path):
    dest = tmp_path / "dl" / checkpoint.CHECKPOINT_TAR
    with pytest.raises(ToolkitError, match="cannot download file:///nonexistent/x.tar: .*--checkpoint"):
        checkpoint.download_checkpoint(dest, url="file:///nonexistent/x.tar")
    not_tar = tmp_path / "page.html"
    not_tar.write_text("<html>proxy login</html>")
    with pytest.raises(ToolkitError, match="not a readable tar archive"):
        checkpoint.download_checkpoint(dest, url=not_tar.as_uri())
    assert listing(dest.parent) == []  # no partial download takes the name, no .part left


def test_protocol_2_pdparams_load_and_code_is_still_refused():
    state = OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(checkpoint.parse_pdparams(pickle.dumps(state, protocol=2), "p2")["w"], state["w"])
    evil = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(ToolkitError, match="refusing to load _codecs.encode with encoding 'rot13'"):
        checkpoint.parse_pdparams(evil, "evil")
    with pytest.raises(ToolkitError, match="refusing to load os.system"):
        checkpoint.parse_pdparams(b"cos\nsystem\n(S'true'\ntR.", "evil")


def test_random_tar_checkpoint_is_one_line(tmp_path):
    (tmp_path / "r.tar").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    ran = run_main("export_onnx", "--checkpoint", tmp_path / "r.tar", "--out_dir", tmp_path / "out")
    assert "r.tar: not a readable tar archive (ReadError: method tar: ReadError('invalid header'))" in ran.one_error()
    assert len(ran.err.strip().splitlines()) == 1
