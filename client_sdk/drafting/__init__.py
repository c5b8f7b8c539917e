"""Drafting: the request's own-text index, the calibrated tree builder, the drafters, the
planners and the Speculator facade. numpy and numba only: no gRPC, no torch."""
