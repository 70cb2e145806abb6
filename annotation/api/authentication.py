"""API authentication, in a module of its own: DRF imports DEFAULT_AUTHENTICATION_CLASSES
while it loads its views, so this module must not import them."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


class ExpiringTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, refused once the token is older than TOKEN_TTL."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if token.created < timezone.now() - settings.TOKEN_TTL:
            raise AuthenticationFailed(
                "this token has expired: POST your user name and password to /api/auth/token/ "
                "for a new one"
            )
        return user, token
