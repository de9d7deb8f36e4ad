"""Daemon configs: every value the loader refuses, named in its message, before a daemon binds or opens anything."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import toml_value
from fedscore.daemons.config import DaemonConfig, load_coordinator_config, load_party_config, resolve_data_file
from fedscore.daemons.server import load_identity
from fedscore.errors import ConfigError

ISSUER = "AB" * 32


def write_config(folder: Path, section: str, **settings: object) -> Path:
    (folder / "data").mkdir(exist_ok=True)
    path = folder / f"{section}.toml"
    path.write_text(f"[{section}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items()))
    return path


def party(folder: Path, **settings: object) -> DaemonConfig:
    return load_party_config(write_config(folder, "party", **{"name": "bureau", **settings}))


def test_a_party_config_with_defaults_and_relative_paths(tmp_path):
    (tmp_path / "tls").mkdir()
    config = party(tmp_path, listen="0.0.0.0:50062", tls_dir="tls", consent_issuers=[ISSUER], card_centers=["bank"],
                   scoring_database="applicants.sqlite", http_listen="[::1]:8080")
    assert (config.name, config.listen, config.http_listen) == ("bureau", "0.0.0.0:50062", "[::1]:8080")
    assert config.state_dir == tmp_path.resolve() / "state" and config.data_dir == tmp_path.resolve() / "data"
    assert config.tls_dir == tmp_path.resolve() / "tls"
    assert config.scoring_database == tmp_path.resolve() / "applicants.sqlite"
    assert config.consent_issuers == (ISSUER.lower(),) and config.card_centers == ("bank",)
    for name in ("workers", "max_message_mib", "min_key_bits", "min_batch_rows", "consent_max_age_days",
                 "consent_max_uses", "scoring_table", "scoring_id"):
        assert getattr(config, name) == getattr(DaemonConfig, name), name   # the dataclass holds the defaults
    assert config.tls is None


def test_a_coordinator_config_is_named_coordinator_and_has_no_data(tmp_path):
    config = load_coordinator_config(write_config(tmp_path, "coordinator", listen="127.0.0.1:50060"))
    assert config.name == "coordinator" and config.data_dir is None and config.tls_dir is None
    with pytest.raises(ConfigError, match="unknown setting 'data_dir'"):
        load_coordinator_config(write_config(tmp_path, "coordinator", data_dir="data"))


@pytest.mark.parametrize("settings, fragment", [
    ({"colour": "red"}, "unknown setting 'colour'"),
    ({"name": "9lives"}, "name '9lives'"),
    ({"name": "a" * 64}, "at most 63"),
    ({"listen": "localhost"}, "listen must be host:port (e.g. 0.0.0.0:50061), got 'localhost'"),
    ({"listen": "127.0.0.1:70000"}, "got '127.0.0.1:70000'"),
    ({"listen": "127.0.0.1:port"}, "got '127.0.0.1:port'"),
    ({"listen": 50061}, "listen must be a string, got 50061"),
    ({"http_listen": "8080"}, "http_listen must be host:port (e.g. 0.0.0.0:50061), got '8080'"),
    ({"workers": -1}, "workers must be 0 (every core) or positive, got -1"),
    ({"workers": True}, "workers must be an integer, got True"),
    ({"max_message_mib": 3}, "max_message_mib must be between 4 and 1024, got 3"),
    ({"max_message_mib": 2048}, "max_message_mib must be between 4 and 1024, got 2048"),
    ({"min_key_bits": 1000}, "min_key_bits must be one of 512, 768, 1024, 1536, 2048, 3072, 4096, got 1000"),
    ({"min_key_bits": "2048"}, "min_key_bits must be an integer, got '2048'"),
    ({"min_batch_rows": 0}, "min_batch_rows must be at least 1, got 0"),
    ({"consent_issuers": ["abc"]}, "consent_issuers must be hex Ed25519 public keys (64 hex digits), got 'abc'"),
    ({"consent_issuers": ISSUER}, "consent_issuers must be a list"),
    ({"consent_max_age_days": 0}, "consent_max_age_days must be between 1 and 3650, got 0"),
    ({"consent_max_age_days": 3651}, "got 3651"),
    ({"consent_max_uses": 0}, "consent_max_uses must be between 1 and 1000000, got 0"),
    ({"card_centers": ["bank", "two words"]}, "card_centers must be a list of member names, got 'two words'"),
    ({"card_centers": "bank"}, "card_centers must be a list, got 'bank'"),
    ({"state_dir": 7}, "state_dir must be a string, got 7"),
    ({"scoring_table": ["a"]}, "scoring_table must be a string"),
    ({"reason": "x" * 161}, "reason must be one printable line of at most 160 characters"),
    ({"reason": "a\tb"}, "reason must be one printable line"),
])
def test_each_bad_value_is_refused_by_name(tmp_path, settings, fragment):
    with pytest.raises(ConfigError) as refused:
        party(tmp_path, **settings)
    message = str(refused.value)
    assert message.startswith(f"party config {tmp_path / 'party.toml'}") and fragment in message   # the path as given


def test_missing_folders_are_named_when_the_daemon_starts(tmp_path):
    """A config can be checked before its certificates and data are in place; starting needs them."""
    config = party(tmp_path, tls_dir="no-such-tls", data_dir="no-such-data")
    assert config.tls_dir == tmp_path.resolve() / "no-such-tls"
    with pytest.raises(ConfigError, match=r"TLS folder .*no-such-tls: ca.pem is missing"):
        load_identity("party", config, insecure=False)
    with pytest.raises(ConfigError, match="no TLS identity; set tls_dir"):
        load_identity("party", replace(config, tls_dir=None), insecure=False)
    assert load_identity("party", config, insecure=True).tls is None
    started = subprocess.run(
        [sys.executable, "-m", "fedscore", "party", "serve", "--config", str(tmp_path / "party.toml"), "--insecure"],
        capture_output=True, text=True, timeout=120,
    )
    assert started.returncode == 2 and "no-such-data does not exist" in started.stderr


def test_unreadable_configs(tmp_path):
    with pytest.raises(ConfigError, match="party config .* does not exist"):
        load_party_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[party\nname=")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_party_config(tmp_path / "bad.toml")
    (tmp_path / "other.toml").write_text('[coordinator]\nname = "coordinator"\n')
    with pytest.raises(ConfigError, match=r"missing \[party\] table"):
        load_party_config(tmp_path / "other.toml")


def test_data_file_must_stay_inside_the_party_folder(tmp_path):
    (tmp_path / "data").mkdir()
    assert resolve_data_file(tmp_path / "data", "x.csv", "bureau") == (tmp_path / "data" / "x.csv").resolve()
    for escape in ("../secret.csv", "/etc/passwd", "sub/../../x.csv"):
        with pytest.raises(ConfigError, match="outside its data folder"):
            resolve_data_file(tmp_path / "data", escape, "bureau")


def test_a_partners_audience_table_is_read_whole_and_each_bad_value_named(tmp_path):
    """[party.audience]: what a partner answers audience queries with (fedscore.protocol.audience.policy)."""
    good = {"users": "users.csv", "segments": ["preference"], "min_cell": 50, "budget": 2, "min_epsilon": 0.2}
    path = write_config(tmp_path, "party", name="shop")
    path.write_text(path.read_text() + "\n[party.audience]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in good.items()))
    policy = load_party_config(path).audience
    assert (policy.users, policy.segments, policy.min_cell, policy.budget, policy.min_epsilon) == \
        ("users.csv", ("preference",), 50, 2.0, 0.2)
    assert (policy.window_days, policy.max_epsilon, policy.min_points_gap) == (30, 1.0, 10.0)   # the defaults
    (tmp_path / "plain").mkdir()
    assert load_party_config(write_config(tmp_path / "plain", "party", name="shop")).audience is None
    for change, fragment in [
        ({"colour": "red"}, "unknown setting 'colour'"),
        ({"users": ""}, "users must name this partner's users file"),
        ({"min_cell": 0}, "min_cell must be a whole number of at least 1"),
        ({"budget": -1}, "budget must be a positive number"),
        ({"min_epsilon": 2.0}, "min_epsilon"),
        ({"segments": ["id"]}, "segments may not name the id column"),
    ]:
        table = {**good, **change}
        path.write_text(write_config(tmp_path, "party", name="shop").read_text() + "\n[party.audience]\n"
                        + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items()))
        with pytest.raises(ConfigError, match="party.audience") as caught:
            load_party_config(path)
        assert fragment in str(caught.value)


@pytest.mark.parametrize("settings, fragment", [
    ({"engine": "spark"}, 'engine must be "local" or "ray", got \'spark\''),
    ({"engine": "ray"}, 'engine = "ray" needs ray_address: the head node\'s host:port (e.g. 10.0.0.5:6379) or "auto", '
                        "got ''"),
    ({"engine": "ray", "ray_address": "10.0.0.5"}, "got '10.0.0.5'"),
    ({"engine": "ray", "ray_address": "10.0.0.5:0"}, "got '10.0.0.5:0'"),
    ({"engine": "ray", "ray_address": "ray://10.0.0.5:10001"}, "is a Ray Client address"),
    ({"ray_address": "10.0.0.5:6379"}, 'ray_address is set but engine is "local"'),
])
def test_engine_settings_are_checked_by_name(tmp_path, settings, fragment):
    with pytest.raises(ConfigError) as refused:
        party(tmp_path, **settings)
    assert str(refused.value).startswith(f"party config {tmp_path / 'party.toml'}") and fragment in str(refused.value)


def test_the_engine_is_local_by_default_and_ray_takes_an_address(tmp_path, monkeypatch):
    from fedscore.crypto import engine

    assert (party(tmp_path).engine, party(tmp_path).ray_address) == ("local", "")
    for address in ("10.0.0.5:6379", "[fd00::5]:6379", "auto"):
        config = party(tmp_path, engine="ray", ray_address=address)
        assert (config.engine, config.ray_address) == ("ray", address)
    assert type(engine.open_engine("local", 0)) is engine.CryptoPool   # the default install's own pool
    monkeypatch.setattr(engine.importlib.util, "find_spec", lambda name: None)   # as without the extra
    with pytest.raises(ConfigError, match=r"pip install fedscore\[ray\]"):
        engine.open_engine("ray", None, "10.0.0.5:6379")
