"""The fuzz suites drive the real ``signoff serve``, like the acceptance suite."""

from tests.acceptance.conftest import database_url, db_url_postgres, server

__all__ = ["database_url", "db_url_postgres", "server"]
