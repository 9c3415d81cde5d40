"""Build images from a Containerfile (row 4).

The language itself (parser, instruction model, words, scope, config changes) is
:mod:`lamina.dockerfile`, shared with ``lamina commit/import --change``. Here:

- ``files``: the build context, ``.dockerignore``, COPY and ADD;
- ``sandbox``: RUN steps in runc on overlay snapshots, ``RUN --mount``;
- ``plan`` (the stage graph), ``executor`` and ``steps`` (running it), ``cache``
  (content-keyed step records), ``api``.
"""
