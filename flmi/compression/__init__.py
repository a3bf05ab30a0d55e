"""Compressed model updates: quantisation, top-k and PowerSGD, with error feedback.

A :class:`~flmi.compression.base.Compressor` turns a site's update (named
float tensors) into a :class:`~flmi.compression.payload.Compressed` payload:
typed numpy arrays and a little string metadata, serialised with
``safetensors`` (never pickled). :func:`~flmi.compression.payload.wire_bytes`
is the length of that serialisation, the one number every runtime counts.
Compressors are chosen by ``[compression] method`` from
:data:`~flmi.compression.registry.COMPRESSORS` (entry-point group
``flmi.compressors``).
"""
