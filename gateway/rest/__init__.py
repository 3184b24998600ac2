"""The aiohttp front end: the public REST + JSON API, translated to and from the gRPC service."""
