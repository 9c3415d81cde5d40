"""lamina's registry client: a Fetcher and Pusher over the OCI Distribution Spec.

``api`` holds the contracts; ``transport`` (aiohttp, retries) with ``authflow`` (401 ->
token -> retry) and ``credentials`` (docker config.json) carry the HTTP; ``remote`` and
``upload`` speak the distribution API; ``pull`` and ``push`` orchestrate whole images
over the contracts; ``sources`` remembers which repository a blob came from.
"""
