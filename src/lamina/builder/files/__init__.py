"""What COPY and ADD read and write: the build context and ``.dockerignore``
(``ignore``, ``context``: selection and content checksums), the copy into a root
filesystem (``copy``, ``chmod``), and ADD's archives and URLs (``archive``, ``addurl``)."""
