"""lamina.registry: the OCI Distribution Spec v1.1 registry, server and client.

The pure protocol, asked by both ends (no sockets, no files):

- ``protocol``: the server's decisions (pages, manifest PUT checks, referrers), and the
  one import that re-exports the rest of the pure core;
- ``routes``: request matching and validated route parameters (the name and tag
  grammar itself is ``lamina.oci.reference``'s);
- ``errors``: the spec's error codes and bodies; ``ranges``: ``Range`` headers;
- ``upload_state``: the blob upload state machine;
- ``challenges``: ``WWW-Authenticate`` / ``Authorization`` values and token scopes.

The I/O around it, one subpackage each: ``server`` (aiohttp), ``client`` (a Fetcher and
Pusher), ``storage`` (drivers behind one Protocol), ``authn`` (who may do what); and
``gc``, the garbage collector over a storage driver.

Nothing is imported here: each room is imported by name, so a client does not load
the server (and ``lamina login`` does not load the HTTP stack).
"""

__all__ = [
    "authn",
    "challenges",
    "client",
    "errors",
    "gc",
    "protocol",
    "ranges",
    "routes",
    "server",
    "storage",
    "upload_state",
]
