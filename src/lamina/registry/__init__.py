"""lamina.registry: the OCI Distribution Spec v1.1 registry, server and client.

``protocol`` (with ``routes``, ``errors``, ``uploads``, ``ranges``, ``auth``) is pure:
it decides, the aiohttp server and the client do the I/O.
"""
