"""One reader of safetensors headers and one dtype table (:mod:`basin.formats`), for the core
and the store alike.

Before, the store validated uploads with its own table (``U16``, ``U32``, ``U64``, ``C64``,
``F8_E8M0``, …) while the core read headers with another: a checkpoint the store accepted
then failed in a run ("malformed header entry") and its dtype was spelled ``u16`` in the
compatibility check, where the same tensor in a ``.bin`` is ``uint16`` — a spurious mismatch.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from basin.checkpoints import LazyStateDict, check_compatible, tensor_meta
from basin.errors import CheckpointError
from basin.formats import SAFETENSORS_DTYPES, read_safetensors_header
from service.store import validate_safetensors


def _bytes_as(dtype: torch.dtype, n: int = 3) -> torch.Tensor:
    """``n`` elements of ``dtype`` with distinct bytes (any dtype, even those without arange)."""
    raw = torch.arange(n * dtype.itemsize, dtype=torch.int64).remainder(251).add(1).to(torch.uint8)
    return raw.view(dtype)


@pytest.mark.parametrize("code", sorted(SAFETENSORS_DTYPES))
def test_every_dtype_the_table_names_is_written_read_and_spelled_alike(code, tmp_path):
    name, itemsize = SAFETENSORS_DTYPES[code]
    dtype = getattr(torch, name)
    assert dtype.itemsize == itemsize
    t = _bytes_as(dtype)
    st = tmp_path / "st"
    st.mkdir()
    save_file({"w": t}, str(st / "model.safetensors"))  # the safetensors library's own code for it
    header = read_safetensors_header(st / "model.safetensors")
    assert header["w"]["dtype"] == code
    assert validate_safetensors(st / "model.safetensors") == header  # the store reads it the same way
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torch.save({"w": t}, bin_dir / "pytorch_model.bin")
    # the same tensor has the same dtype name whichever format holds it
    assert tensor_meta(st) == tensor_meta(bin_dir) == {"w": ((3,), name)}
    assert check_compatible([st, bin_dir]) == []
    lazy = LazyStateDict(st)
    assert lazy.meta("w") == ((3,), dtype)
    assert torch.equal(lazy["w"].view(torch.uint8), t.view(torch.uint8))


def test_a_code_outside_the_table_is_refused_by_core_and_store_alike(classifier_family, tmp_path):
    d = tmp_path / "odd"
    shutil.copytree(classifier_family["ft_a"], d)
    f = d / "model.safetensors"
    raw = f.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    head = raw[8 : 8 + n].replace(b'"F32"', b'"F4" ', 1)  # a sub-byte float (same length)
    f.write_bytes(raw[:8] + head + raw[8 + n :])
    for read in (validate_safetensors, read_safetensors_header):
        with pytest.raises(CheckpointError, match="unknown dtype 'F4'"):
            read(f)
    for read_dir in (tensor_meta, LazyStateDict):
        with pytest.raises(CheckpointError, match="unknown dtype 'F4'"):
            read_dir(d)
