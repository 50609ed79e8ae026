"""Institutional log-in: OpenID Connect providers and LDAP directories vouching for accounts."""
