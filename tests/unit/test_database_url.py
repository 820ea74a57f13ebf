import pytest

from shared import errors
from shared.db.pool import parse_database_url, with_database


def test_tcp_url_gives_host_port_user_password_and_database():
    args = parse_database_url("postgresql://shop:p%40ss@db.internal:6543/orders")
    assert args == {"user": "shop", "password": "p@ss", "host": "db.internal", "port": 6543, "database": "orders"}


def test_unix_socket_url_in_query_gives_socket_path():
    args = parse_database_url("postgresql://postgres@/postgres?host=/tmp/pg&port=5433")
    assert args["unix_sock"] == "/tmp/pg/.s.PGSQL.5433"
    assert "host" not in args
    assert args["database"] == "postgres"


def test_url_without_user_defaults_to_postgres_on_localhost():
    args = parse_database_url("postgresql:///shop")
    assert args["user"] == "postgres"
    assert args["host"] == "localhost" and args["port"] == 5432


def test_other_schemes_are_a_configuration_error():
    with pytest.raises(errors.ConfigurationError):
        parse_database_url("mysql://root@localhost/shop")


def test_with_database_swaps_only_the_database():
    assert with_database("postgresql://u@/postgres?host=/s", "t1") == "postgresql://u@/t1?host=/s"
