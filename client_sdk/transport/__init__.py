"""Transport: the datastore client (blocking, future-based and asyncio), the circuit-broken
prefetching tries source and the feedback sink. gRPC lives here and nowhere else in the SDK."""
