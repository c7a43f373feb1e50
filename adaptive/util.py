"""Helpers the library shares with `replay` and with users' own code: atomic file writes,
strict-JSON floats for state dicts, and number checks whose errors repeat the bad value."""

from adaptive._checks import JSONFloat, atomic_write, check_number, decode_float, encode_float

__all__ = ["JSONFloat", "atomic_write", "check_number", "decode_float", "encode_float"]
