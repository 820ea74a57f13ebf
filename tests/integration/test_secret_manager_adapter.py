"""SecretManagerSecrets with the real google-cloud-secret-manager client against a fake at the network edge
(tests/fakes/secret_manager.py): values, the TTL cache, CRC32C, and how failures map to our errors — with the
value never in a log line or an error message.

`endpoint=` is the REST transport the adapter builds for a fake; the behaviour tests also run over gRPC (the
client's default transport on Google Cloud), with the real client on an insecure channel to the same fake.
"""

import base64
import logging
import time

import grpc
import pytest

from shared import errors
from shared.config import Settings
from shared.secrets import SecretManagerSecrets, build_secret_source
from tests.fakes.secret_manager import FakeSecretManager
from tests.helpers import free_port, wait_for

PROJECT = "shop-test"
VALUE = "sm-value-7f3c9a1e-never-logged"
ROTATED = "sm-value-rotated-52d0b8c4"


@pytest.fixture
def fake():
    with FakeSecretManager(PROJECT) as server:
        server.add_version("admin-token", VALUE)
        yield server


def source(fake, **kwargs) -> SecretManagerSecrets:
    return SecretManagerSecrets(PROJECT, endpoint=fake.url, **kwargs)


def grpc_source(fake, **kwargs) -> SecretManagerSecrets:
    from google.cloud import secretmanager
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcTransport,
    )

    channel = grpc.insecure_channel(fake.grpc_target)
    client = secretmanager.SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=channel))
    return SecretManagerSecrets(PROJECT, client=client, **kwargs)


@pytest.fixture(params=["rest", "grpc"])
def make(request, fake):
    """`make(**kwargs)`: the adapter on the REST endpoint, or on the real client's gRPC transport."""
    return (lambda **kw: source(fake, **kw)) if request.param == "rest" else (lambda **kw: grpc_source(fake, **kw))


def test_the_real_client_reads_latest_over_rest_without_credentials(fake):
    assert source(fake).get("admin-token") == VALUE
    [request] = fake.seen
    assert request.method == "GET"
    assert request.path == f"/v1/projects/{PROJECT}/secrets/admin-token/versions/latest:access"
    assert request.headers["x-goog-request-params"] == f"name=projects/{PROJECT}/secrets/admin-token/versions/latest"
    assert "Authorization" not in request.headers  # AnonymousCredentials: nothing to find on a laptop or in CI


def test_an_endpoint_without_a_scheme_means_plain_http_and_the_settings_path_builds_the_same(fake):
    host_port = fake.url.removeprefix("http://")
    assert source(fake).get("admin-token") == VALUE
    assert SecretManagerSecrets(PROJECT, endpoint=host_port).get("admin-token") == VALUE
    settings = Settings(SECRET_BACKEND="secret_manager", GCP_PROJECT=PROJECT, SECRET_MANAGER_ENDPOINT=fake.url)
    built = build_secret_source(settings)
    assert isinstance(built, SecretManagerSecrets) and built.get("admin-token") == VALUE
    assert fake.access_count("admin-token") == 3


def test_a_value_is_cached_for_the_ttl_and_fetched_again_after_it(fake):
    secrets = source(fake, ttl_s=1.0)
    assert secrets.get("admin-token") == VALUE
    fetched_at = time.monotonic()
    fake.add_version("admin-token", ROTATED)  # rotation: a new latest version
    assert [secrets.get("admin-token") for _ in range(20)] == [VALUE] * 20
    assert fake.access_count("admin-token") == 1

    wait_for(lambda: secrets.get("admin-token") == ROTATED, timeout=5, what="the rotated value after the TTL")
    assert time.monotonic() - fetched_at >= 1.0
    assert fake.access_count("admin-token") == 2
    # Each name has its own entry.
    fake.add_version("stripe-api-key", "sk_test_other")
    assert secrets.get("stripe-api-key") == "sk_test_other"
    assert secrets.get("admin-token") == ROTATED
    assert fake.access_count() == 3


def test_a_payload_whose_crc32c_does_not_match_is_transient_and_never_cached(fake, make):
    fake.corrupt("admin-token")
    secrets = make()
    with pytest.raises(errors.TransientError, match="CRC32C") as raised:
        secrets.get("admin-token")
    assert VALUE not in str(raised.value) and VALUE not in repr(raised.value.details)
    fake.corrupt("admin-token", corrupted=False)
    assert secrets.get("admin-token") == VALUE  # the corrupted answer was not kept
    assert fake.access_count("admin-token") == 2


def test_a_payload_without_a_checksum_is_accepted(fake, make):
    # data_crc32c is proto3 `optional`: absent is not 0 (the real service always sends it, a fake may not).
    fake.omit_checksum("admin-token")
    assert make().get("admin-token") == VALUE


@pytest.mark.parametrize("status", [404, 403])
def test_missing_or_forbidden_is_a_configuration_error(fake, make, status):
    fake.fail_next(status)
    with pytest.raises(errors.ConfigurationError, match="admin-token"):
        make().get("admin-token")
    assert fake.access_count() == 1  # not retried: waiting will not create the secret or the grant


def test_a_name_never_created_is_a_configuration_error(fake, make):
    with pytest.raises(errors.ConfigurationError, match="stripe-webhook-secret"):
        make().get("stripe-webhook-secret")


def test_a_server_error_is_transient_and_not_retried_by_the_client(fake, make):
    fake.fail_next(500)
    secrets = make()
    with pytest.raises(errors.TransientError, match="did not answer"):
        secrets.get("admin-token")
    assert fake.access_count() == 1
    assert secrets.get("admin-token") == VALUE  # and the next call succeeds


def test_unavailable_is_retried_within_the_fetch(fake, make):
    fake.fail_next(503, 503)
    assert make().get("admin-token") == VALUE
    assert fake.access_count() == 3


def test_unavailable_for_good_gives_up_as_transient_within_the_fetch_budget(fake, make):
    fake.fail_always(503)
    started = time.monotonic()
    with pytest.raises(errors.TransientError, match="did not answer"):
        make(timeout_s=1.0).get("admin-token")
    elapsed = time.monotonic() - started
    assert elapsed < 4, f"the fetch took {elapsed:.1f}s; the client's default would retry for 60 s"
    assert fake.access_count() >= 2


def test_nothing_listening_is_transient():
    port = free_port()
    with pytest.raises(errors.TransientError, match="did not answer"):
        SecretManagerSecrets(PROJECT, endpoint=f"http://127.0.0.1:{port}", timeout_s=1.0).get("admin-token")


def test_the_value_never_appears_in_logs_or_errors(fake, make, caplog, monkeypatch):
    # Everything at DEBUG, the Google libraries included (as an operator chasing a problem would set it).
    monkeypatch.setattr(logging.getLogger("google"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="google")
    encoded = base64.b64encode(VALUE.encode()).decode()
    raised = []

    secrets = make(ttl_s=0)
    assert secrets.get("admin-token") == VALUE
    fake.corrupt("admin-token")
    for fault in (None, 404, 500):
        if fault:
            fake.corrupt("admin-token", corrupted=False)
            fake.fail_next(fault)
        with pytest.raises(errors.OrderpipeError) as caught:
            secrets.get("admin-token")
        raised.append(caught.value)

    assert [type(e) for e in raised] == [errors.TransientError, errors.ConfigurationError, errors.TransientError]
    assert logging.getLogger("google.cloud").isEnabledFor(logging.DEBUG)  # DEBUG really was on for Google's code
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert VALUE not in text and encoded not in text, f"secret in a log record of {record.name}"
    for exc in raised:
        chain = []
        cause = exc
        while cause is not None:
            chain.append(f"{cause} {cause!r}")
            cause = cause.__cause__ or cause.__context__
        assert not any(VALUE in text or encoded in text for text in chain)
