"""Who may do what on the registry: htpasswd (bcrypt) basic auth and Docker token auth
(a built-in issuer signing JWTs). The server asks an :class:`~.api.Authenticator`."""
