"""Print a new API token for a user (for scripts: `Authorization: Bearer <token>`).

    python manage.py kviz token USERNAME

The token is shown once; only its hash is stored. Each call makes another token.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("username")


def run(options, out, err) -> int:
    from django.contrib.auth import get_user_model

    from captures.access.auth import create_api_token

    try:
        token = create_api_token(options["username"])
    except get_user_model().DoesNotExist:
        err.write(f"kviz token: no user {options['username']!r}")
        return 1
    out.write(token)
    return 0
