"""Hypothesis strategies shared by the fuzz tests: names, versions, parameters, metadata.

Each leans towards what a server gets wrong: the names it knows next to near misses, unicode,
path-like names and names of 200,000 characters; numbers at the edges of their types.
"""

from __future__ import annotations

from hypothesis import strategies as st

from axon.protocol import open_inference_pb2 as oip
from tests.fuzz.properties import SERVED_MODELS
from tests.support.repositories import BATCHED, BROKEN, DIGITS, HOLD_QUEUE, PETS

UNICODE = st.characters(codec="utf-8")
"""Any character protobuf can carry in a string (UTF-8: no lone surrogates)."""
short_text = st.text(UNICODE, max_size=40)
long_text = st.builds(lambda character, length: character * length,
                      UNICODE, st.integers(1_000, 200_000))
path_like = st.builds(lambda parts, separator: separator.join(parts),
                      st.lists(st.sampled_from(["..", ".", "", "etc", "passwd", DIGITS, "1",
                                                "model.onnx", "~", "C:", "%2e%2e", "\x00"]),
                               min_size=1, max_size=6),
                      st.sampled_from(["/", "\\"]))

model_names = st.one_of(
    st.sampled_from([DIGITS, PETS, BATCHED, HOLD_QUEUE, BROKEN, "", "MNIST", f"{DIGITS} ",
                     f"{DIGITS}\x00", f"{DIGITS}\n", "resnet"]),
    short_text, long_text, path_like)
"""Served models, models in the repository not loaded (or broken), near misses, junk."""
served_or_any_name = st.booleans().flatmap(
    lambda served: st.sampled_from(SERVED_MODELS) if served else model_names)
"""Half of them a served model's name, so that the checks past the name see the rest."""

versions = st.one_of(
    st.sampled_from(["", "1", "2", "0", "01", "9" * 18, "9" * 19, "-1", "+1", "1.0", "\u0661",
                     " 1", "1/../2", "latest"]),
    st.integers(-2**70, 2**70).map(str),
    # Past Python's 4,300-digit limit on int(str): int() raises ValueError there.
    st.integers(4_000, 6_000).map(lambda digits: "1" * digits),
    short_text)

TRITON_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset",
                     "classification", "sequence_id", "sequence_start", "sequence_end",
                     "triton_enable_empty_final_response", "binary_data_size",
                     "binary_data_output", "priority", "timeout", "")
parameter_values = st.one_of(
    st.just(oip.InferParameter()),
    st.builds(oip.InferParameter, bool_param=st.booleans()),
    st.builds(oip.InferParameter, int64_param=st.integers(-2**63, 2**63 - 1)),
    st.builds(oip.InferParameter, uint64_param=st.integers(0, 2**64 - 1)),
    st.builds(oip.InferParameter, double_param=st.floats()),
    st.builds(oip.InferParameter, string_param=st.one_of(short_text, long_text)))
parameters = st.dictionaries(st.one_of(st.sampled_from(TRITON_PARAMETERS), short_text),
                             parameter_values, max_size=4)

_KEY_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789-_."
_ascii_keys = st.text(_KEY_CHARACTERS, min_size=1, max_size=40).filter(
    lambda key: not key.startswith("grpc-") and not key.endswith("-bin"))
_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
metadata_entry = st.one_of(
    st.tuples(st.one_of(_ascii_keys, st.sampled_from(
        ["authorization", "user-agent", "x-request-id", "x-forwarded-for", "content-length",
         "accept", "host", "cookie"])), _printable),
    st.tuples(_ascii_keys.map(lambda key: f"{key}-bin"), st.binary(max_size=200)))
long_metadata_entry = st.tuples(_ascii_keys, st.builds(lambda character, length: character * length,
                                                       st.sampled_from("a~ "),
                                                       st.integers(1_000, 12_000)))
"""Up to 12 KB: past gRPC's 8 KiB soft limit on headers, sometimes (a refusal costs gRPC a few
tenths of a second, so not every example crosses it)."""
metadata = st.builds(list.__add__, st.lists(metadata_entry, max_size=8),
                     st.lists(long_metadata_entry, max_size=1))
"""What gRPC lets a client send: lower-case keys of ``[a-z0-9-_.]`` outside ``grpc-``,
printable ASCII values, and bytes under ``-bin`` keys."""
