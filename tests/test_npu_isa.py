"""NPU ISA: binary encoding and assembly round trips, geometry derived from the chip file."""
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapeout
from tapeout.npu import isa

_INT = {"u8": st.integers(0, 1), "u32": st.integers(0, 2**32 - 1), "i32": st.integers(-2**31, 2**31 - 1),
        "u64": st.integers(0, 2**64 - 1), "f32": st.floats(width=32, allow_nan=False)}


def _instr(cls):
    kw = {}
    for name, kind in isa.fields_of(cls):
        kw[name] = st.sampled_from(isa._ENUMS[kind]) if kind in isa._ENUMS else _INT[kind]
    return st.builds(cls, **kw)


ANY = st.one_of(*[_instr(c) for c in isa.OPCODES.values()])


@settings(max_examples=300, deadline=None)
@given(ANY)
def test_binary_round_trip(ins):
    word = isa.encode(ins)
    assert len(word) == isa.WORD_BYTES
    assert isa.decode(word) == ins


@settings(max_examples=300, deadline=None)
@given(ANY)
def test_asm_round_trip(ins):
    text = isa.to_asm(ins)
    assert isa.from_asm(text) == ins
    assert text.split()[0] == type(ins).__name__.lower()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(ANY, max_size=6), min_size=1, max_size=3))
def test_program_round_trips(streams):
    assert isa.program_from_asm(isa.program_to_asm(streams)) == streams
    for s in streams:
        assert isa.decode_stream(isa.encode_stream(s)) == s


def test_every_instruction_documents_its_loop():
    for cls in isa.OPCODES.values():
        doc = cls.__doc__ or ""
        assert "for " in doc or "max(" in doc, cls.__name__


def test_bad_assembly_is_a_user_error():
    with pytest.raises(isa.IsaError, match="unknown mnemonic"):
        isa.from_asm("frobnicate a=1")
    with pytest.raises(isa.IsaError, match="bad operand"):
        isa.from_asm("barrier nonsense=3")
    with pytest.raises(isa.IsaError, match="not one of"):
        isa.from_asm("vec func=nope rows=1 cols=1 d_addr=0 d_dtype=fp32 d_rs=1 a_addr=0 a_dtype=fp32 a_rs=1")
    with pytest.raises(isa.IsaError, match="out of range"):
        isa.encode(isa.Barrier(w_dma=-1))


def test_geometry_from_chip():
    g = isa.Geometry.from_chip(tapeout.load_chip("tapeout-n7"))
    assert (g.rows, g.cols, g.cores, g.sram_bytes) == (128, 128, 16, 4 * 2**20)
    assert g.pe_macs("bf16") == 1 and g.pe_macs("int8") == 2 and g.tile_cols("fp8") == 256
    with pytest.raises(isa.IsaError, match="array_rows"):
        isa.Geometry.from_chip(tapeout.load_chip("h100-sxm"))
    small = dataclasses.replace(g, rows=8, cols=4, macs={"bf16": 32})
    assert isa.matmul_cycles(small, 16, 16, 8, "bf16", overlap=False) == 4 * (2 * 8 + 4 + 16 - 2)
    assert isa.matmul_cycles(small, 16, 16, 8, "bf16") == 8 + 8 + 4 - 2 + 4 * 16


def test_docs_embed_the_generated_isa_reference():
    from pathlib import Path
    doc = Path(__file__).parent.parent / "docs" / "npu.md"
    assert isa.reference_markdown() in doc.read_text()
