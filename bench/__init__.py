"""Benchmarks of the gateway against bare aiohttp and grpc.aio ceilings: `python -m bench`."""
