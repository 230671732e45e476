"""Property-based tests (``hypothesis``) of the safetensors header validator: arbitrary bytes,
arbitrary JSON headers and mutations of valid headers give either a validated header or one
:class:`HeaderError` (one line, naming the file), never another exception, in time proportional
to the input; and every header it accepts is one the ``safetensors`` library accepts too, with
the same tensors."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ww_callbacks.safetensors_header import (  # noqa: E402
    DTYPE_BITS,
    HeaderError,
    parse_header,
    read_header,
)

#: Per-example time bound: a fixed allowance plus a cost per byte of input far above what the
#: validator needs (~50 ns/byte for JSON parsing); a quadratic path would blow it on the larger
#: examples. Wall-clock on a shared machine, hence the generous constants.
SECONDS_FIXED = 0.5
SECONDS_PER_BYTE = 2e-6

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def validate(raw: bytes, file_size: int):
    """The validator's verdict on a header: the header, or the HeaderError. Anything else
    raised fails the test; so does a time over the bound."""
    start = time.perf_counter()
    try:
        result = parse_header(raw, file_size, "f.safetensors")
    except HeaderError as err:
        result = err
        text = str(err)
        assert text and "\n" not in text and text.startswith("f.safetensors: "), text
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS_FIXED + SECONDS_PER_BYTE * len(raw), (elapsed, len(raw))
    return result


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)

dtype_names = st.sampled_from(sorted(DTYPE_BITS)) | st.text(max_size=6)
dims = st.integers(min_value=-2, max_value=40) | st.integers()
entry = st.fixed_dictionaries({
    "dtype": dtype_names,
    "shape": st.lists(dims, max_size=4) | json_values,
    "data_offsets": st.lists(st.integers(min_value=-8, max_value=4096), min_size=0, max_size=3)
    | json_values,
}) | json_values
headers = st.dictionaries(st.text(max_size=10), entry, max_size=6) | json_values


@SETTINGS
@given(st.binary(max_size=4096), st.integers(min_value=0, max_value=1 << 40))
def test_arbitrary_bytes(raw, extra):
    validate(raw, 8 + len(raw) + extra)


@SETTINGS
@given(st.binary(max_size=64) | st.builds(
    lambda n, body: struct.pack("<Q", n) + body,
    st.integers(min_value=0, max_value=(1 << 64) - 1) | st.integers(min_value=0, max_value=600),
    st.binary(max_size=600)))
def test_arbitrary_files(tmp_path_factory, content):
    """Whole files of arbitrary bytes (the 8-byte length included) through ``read_header``."""
    path = Path(tmp_path_factory.mktemp("bytes")) / "x.safetensors"
    path.write_bytes(content)
    start = time.perf_counter()
    try:
        read_header(path)
    except HeaderError as err:
        assert "\n" not in str(err) and str(path) in str(err)
    assert time.perf_counter() - start < SECONDS_FIXED + SECONDS_PER_BYTE * len(content)


@SETTINGS
@given(headers, st.integers(min_value=0, max_value=4096))
def test_arbitrary_json_headers(header, data_len):
    raw = json.dumps(header).encode()
    validate(raw, 8 + len(raw) + data_len)


@st.composite
def valid_files(draw):
    """A valid header (tensors tiling the buffer in a random order of names) and its size."""
    n = draw(st.integers(min_value=0, max_value=8))
    names = draw(st.lists(st.text(min_size=1, max_size=8).filter(lambda s: s != "__metadata__"),
                          min_size=n, max_size=n, unique=True))
    header, at = {}, 0
    for name in names:
        dtype = draw(st.sampled_from([d for d, b in DTYPE_BITS.items() if b % 8 == 0]))
        shape = draw(st.lists(st.integers(min_value=0, max_value=6), max_size=3))
        count = 1
        for d in shape:
            count *= d
        size = count * DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + size]}
        at += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                                      max_size=3))
    return header, at


@SETTINGS
@given(valid_files())
def test_valid_headers_are_accepted(file):
    header, data_len = file
    raw = json.dumps(header).encode()
    result = validate(raw, 8 + len(raw) + data_len)
    assert not isinstance(result, HeaderError), result
    assert {t.name for t in result.tensors} == set(header) - {"__metadata__"}


@SETTINGS
@given(valid_files(), st.data())
def test_mutated_headers_agree_with_the_safetensors_library(tmp_path_factory, file, data):
    """One field of a valid header changed: our verdict equals the ``safetensors`` library's."""
    safetensors = pytest.importorskip("safetensors")
    header, data_len = file
    names = [k for k in header if k != "__metadata__"]
    if names:
        name = data.draw(st.sampled_from(names))
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[name][field] = data.draw(
            {"dtype": dtype_names, "shape": st.lists(dims, max_size=3),
             "data_offsets": st.lists(st.integers(min_value=-4, max_value=600), min_size=2,
                                      max_size=2)}[field])
    data_len += data.draw(st.sampled_from([0, 0, 1, -1]))
    raw = json.dumps(header).encode()
    if data_len < 0:
        return
    path = Path(tmp_path_factory.mktemp("mut")) / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data_len))
    try:
        read_header(path)
        ours = True
    except HeaderError:
        ours = False
    try:
        with safetensors.safe_open(str(path), framework="numpy") as fh:
            list(fh.keys())
        theirs = True
    except Exception:  # noqa: BLE001 - the library's own error types
        theirs = False
    assert ours == theirs, (header, data_len, ours, theirs)


def test_large_hostile_headers_stay_in_bound():
    """Deep nesting, huge integers, many entries: still a HeaderError, in linear time."""
    cases = [b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
             b'{"a":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,4]}}',
             b"{" + b",".join(b'"k%d":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}' % i
                              for i in range(50_000)) + b"}",
             b'{"a":{"dtype":"F32","shape":[' + b",".join([b"1"] * 200_000)
             + b'],"data_offsets":[0,8]}}']
    for raw in cases:
        assert isinstance(validate(raw, 8 + len(raw) + 4), HeaderError)
