"""`gguf_file.GGUFFile` reads what the `gguf` package's own `GGUFReader` reads: every metadata value (each
GGUF value type, arrays of each) with its Python type, and every tensor's name, shape, ggml type and bytes
(plain and block-quantized), on a file written by `gguf.GGUFWriter`; bad files are named."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from w2s_jax.models.gguf_file import GGUFFile  # noqa: E402

T = gguf.GGUFValueType


def _write(path) -> None:
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_uint8("t.u8", 200)
  w.add_int8("t.i8", -100)
  w.add_uint16("t.u16", 60_000)
  w.add_int16("t.i16", -30_000)
  w.add_uint32("t.u32", 4_000_000_000)
  w.add_int32("t.i32", -2_000_000_000)
  w.add_float32("t.f32", 0.1)
  w.add_uint64("t.u64", 2**63 + 5)
  w.add_int64("t.i64", -(2**62))
  w.add_float64("t.f64", 0.1)
  w.add_bool("t.bool", True)
  w.add_string("t.str", "héllo ▁ wörld <|im_start|>")
  w.add_array("t.strs", ["a", "", "Ġthe", "日本"])
  w.add_array("t.ints", [3, -1, 7])
  w.add_array("t.floats", [0.5, -2.25])
  w.add_array("t.bools", [True, False, True])
  w.add_key_value("t.u16s", [1, 2, 65_535], T.ARRAY, T.UINT16)
  rng = np.random.default_rng(0)
  w.add_tensor("plain.f32", rng.normal(size=(3, 5)).astype(np.float32))
  w.add_tensor("plain.f16", rng.normal(size=(2, 4)).astype(np.float16))
  q = gguf.quants.quantize(rng.normal(size=(4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
  w.add_tensor("block.q8_0", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
  w.add_tensor("plain.i32", np.arange(6, dtype=np.int32).reshape(2, 3))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def test_fields_and_tensors_equal_gguf_readers(tmp_path):
  path = tmp_path / "every_type.gguf"
  _write(path)
  ours, ref = GGUFFile(str(path)), gguf.GGUFReader(str(path), "r")
  ref_fields = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}  # its header
  assert list(ours.fields) == list(ref_fields)
  for key, value in ref_fields.items():
    assert ours.fields[key] == value and type(ours.fields[key]) is type(value), key
    if isinstance(value, list):
      assert [type(v) for v in ours.fields[key]] == [type(v) for v in value], key
  assert ours.fields["t.str"] == "héllo ▁ wörld <|im_start|>" and ours.fields["t.u64"] == 2**63 + 5
  assert ours.fields["t.strs"] == ["a", "", "Ġthe", "日本"] and ours.fields["t.bools"] == [True, False, True]
  assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
  for a, b in zip(ours.tensors, ref.tensors):
    assert a.shape == tuple(int(d) for d in b.shape) and a.tensor_type == int(b.tensor_type), a.name
    assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, a.name
    np.testing.assert_array_equal(a.data, b.data)
  q8 = next(t for t in ours.tensors if t.name == "block.q8_0")
  assert q8.shape == (64, 4) and q8.data.shape == (4, 64 // 32 * 34)  # 2 blocks of 34 bytes per row


def test_bad_files_are_named(tmp_path):
  bad = tmp_path / "not.gguf"
  bad.write_bytes(b"GGML" + bytes(60))
  with pytest.raises(ValueError, match="not.gguf: not a GGUF file"):
    GGUFFile(str(bad))
  path = tmp_path / "cut.gguf"
  _write(path)
  data = path.read_bytes()
  path.write_bytes(data[:-40])  # past the last tensor's alignment padding
  with pytest.raises(ValueError, match=r"cut.gguf: tensor 'plain.i32' runs past the end of the file"):
    GGUFFile(str(path))
