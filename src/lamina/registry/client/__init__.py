"""lamina's registry client: a Fetcher and Pusher over the OCI Distribution Spec.

The contracts live in ``lamina.image.api``; ``transport`` (retries, error mapping) with
``authflow`` (401 -> token -> retry) and ``credentials`` (docker config.json) carry the
HTTP, over ``lighthttp`` (GET/HEAD to plain-HTTP registries) or aiohttp (set up by
``lamina.http``, shared with ``ADD <url>``, and imported on first use); ``remote`` and
``upload`` speak the distribution API. The client is only a transport: which blobs a
pull or push moves, and in which order, is ``lamina.image.transfer``'s business.
"""
