import json
import stat

import pytest

from shared import errors
from shared.secrets import SECRET_NAMES, EnvSecrets, FileSecrets, env_name


def test_env_names_follow_the_contract():
    assert env_name("admin-token") == "ORDERPIPE_SECRET_ADMIN_TOKEN"
    assert env_name("stripe-webhook-secret") == "ORDERPIPE_SECRET_STRIPE_WEBHOOK_SECRET"


def test_env_source_reads_the_variable_and_refuses_missing_ones(monkeypatch):
    monkeypatch.setenv("ORDERPIPE_SECRET_ADMIN_TOKEN", "from-env")
    monkeypatch.delenv("ORDERPIPE_SECRET_KHALTI_SECRET_KEY", raising=False)
    source = EnvSecrets()
    assert source.get("admin-token") == "from-env"
    with pytest.raises(errors.ConfigurationError) as caught:
        source.get("khalti-secret-key")
    assert "from-env" not in caught.value.message


def test_file_source_generates_every_secret_once_private_to_the_owner(tmp_path):
    path = tmp_path / "data" / "secrets.json"
    first = {name: FileSecrets(path).get(name) for name in SECRET_NAMES}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(set(first.values())) == len(SECRET_NAMES)
    again = {name: FileSecrets(path).get(name) for name in SECRET_NAMES}
    assert again == first


def test_generated_secrets_have_the_shapes_the_protocols_need(tmp_path):
    import base64

    source = FileSecrets(tmp_path / "secrets.json")
    assert source.get("stripe-api-key").startswith("sk_test_")
    assert source.get("stripe-webhook-secret").startswith("whsec_")
    standard = source.get("standard-webhook-secret")
    assert standard.startswith("whsec_") and len(base64.b64decode(standard[len("whsec_"):])) == 32


def test_file_source_adds_names_missing_from_an_older_file(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"admin-token": "kept"}))
    source = FileSecrets(path)
    assert source.get("admin-token") == "kept"
    assert source.get("internal-task-token")
