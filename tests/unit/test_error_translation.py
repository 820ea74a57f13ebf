import pg8000.exceptions

from shared import errors
from shared.db.connection import translate_error


def db_error(code: str, **fields):
    return pg8000.exceptions.DatabaseError({"C": code, "M": "secret row value 42 in message", **fields})


def test_unique_violation_becomes_already_exists_with_constraint_name():
    err = translate_error(db_error("23505", n="verifications_provider_external_transaction_id_key"))
    assert isinstance(err, errors.AlreadyExists)
    assert err.details["constraint"] == "verifications_provider_external_transaction_id_key"


def test_other_integrity_violations_become_integrity_errors():
    assert isinstance(translate_error(db_error("23514")), errors.IntegrityError)
    assert isinstance(translate_error(db_error("23503")), errors.IntegrityError)


def test_deadlock_serialization_and_timeouts_are_retryable():
    for code in ("40001", "40P01", "55P03", "57014"):
        assert isinstance(translate_error(db_error(code)), errors.RetryableDatabaseError), code


def test_server_shutdown_and_lost_sockets_mean_database_unavailable():
    assert isinstance(translate_error(db_error("57P01")), errors.DatabaseUnavailable)
    assert isinstance(translate_error(pg8000.exceptions.InterfaceError("network error")), errors.DatabaseUnavailable)
    assert isinstance(translate_error(OSError("broken pipe")), errors.DatabaseUnavailable)


def test_translated_messages_never_carry_the_server_message():
    for code in ("23505", "23514", "40001", "42P01", "22P02"):
        err = translate_error(db_error(code))
        assert "secret row value" not in err.message
        assert "secret row value" not in str(err.details)
