"""lamina.p2p.mirror: the registry-mirror front a container runtime talks to.

Rooms:

- ``upstreams`` (pure): which upstream registry a request is for (containerd's
  ``?ns=``, else the configured default), and the URLs there;
- ``headers`` (pure): what is forwarded each way (hop-by-hop headers dropped, the
  ``Host`` set for the upstream), and the single-``Range`` parser of blob GETs;
- ``access``: the access check of a blob GET (a ``HEAD`` at the upstream with the
  client's own credentials, cached 30 s per credential, upstream and repository);
- ``upstream_source``: :class:`UpstreamSource`, an :class:`lamina.p2p.api.BlobSource`
  that streams straight from the upstream (the fallback without a swarm);
- ``proxy``: everything that is not a blob GET, passed to the upstream untouched;
- ``app``: :func:`add_mirror_routes`, the aiohttp routes over all of the above.

The client's credentials go to the upstream only (the access check, the proxy, this
peer's own back-to-source fetch through ``BlobRequest.source_headers``), never to the
scheduler or another peer.
"""

__all__ = ["access", "app", "headers", "proxy", "upstream_source", "upstreams"]
