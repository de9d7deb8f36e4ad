"""A JobSpec survives the wire and the checkpoint text whole: every field, each set away from its default."""
from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path

import pytest

from fedscore.crypto.obfuscation import STANDARD
from fedscore.errors import DataError
from fedscore.job import KEY_BITS, Binning, JobSpec, PartySpec, Step, check_job_id
from fedscore.job_file import load_job, parse_job
from fedscore.ledger.settlement import FeeContract
from fedscore.proto import fedscore_pb2 as pb
from fedscore.transport import codec

# values a generic rule below cannot guess: the field's own rules restrict them
CHOSEN = {
    "key_bits": 3072, "obfuscation": STANDARD, "validation": 0.25, "label": "default_flag",
    "binning": Binning(method="none", max_bins=7, min_bin_share=0.1, min_iv=0.02, max_features=5, monotonic=False,
                       special_values=(("PAY_0", (-2.0, -1.0)),)),
}


def other_than_default(cls: type, name: str, kind: str, default: object) -> object:
    """A valid value for field ``name`` of ``cls`` that is not its default; a new kind of field fails here."""
    if name in CHOSEN:
        return CHOSEN[name]
    if kind == "bool":
        return not default
    if kind == "int":
        return (0 if default is MISSING else default) + 3
    if kind == "float":
        return (0.0 if default is MISSING else default) + 0.125
    if kind.startswith("str"):
        return f"{cls.__name__.lower()}-{name}".replace("_", "-")
    if kind.startswith("tuple[str"):
        return ("phone", "national_id")
    raise AssertionError(f"{cls.__name__}.{name} ({kind}): give it a non-default value in CHOSEN")


def everything_set(cls: type, **given: object):
    """An instance of a spec dataclass with every field away from its default (``given`` fields as given: a partner
    has no label)."""
    values = dict(given)
    for field in fields(cls):
        if field.name not in values:
            values[field.name] = other_than_default(cls, field.name, field.type, field.default)
    made = cls(**values)
    for field in fields(cls):
        if field.name not in given:
            assert getattr(made, field.name) != field.default, f"{cls.__name__}.{field.name} is still its default"
    return made


def full_spec() -> JobSpec:
    center = everything_set(PartySpec, name="bank")
    partner = everything_set(PartySpec, name="bureau", label=None, address="10.0.0.2:50062")
    return everything_set(JobSpec, name="round-trip", parties=(center, partner), fees=everything_set(FeeContract)).validate()


def assert_same(received: JobSpec, sent: JobSpec) -> None:
    for field in fields(JobSpec):
        expected = field.default if field.name in codec.NOT_SENT else getattr(sent, field.name)
        assert getattr(received, field.name) == expected, field.name


@pytest.mark.parametrize("carry", [
    lambda spec: codec.spec_from_proto(pb.JobSpec.FromString(codec.spec_to_proto(spec).SerializeToString())),
    lambda spec: codec.spec_from_text(codec.spec_to_text(spec)),
], ids=["wire", "checkpoint text"])
def test_every_field_survives_the_codec(carry):
    spec = full_spec()
    received = carry(spec)
    assert_same(received, spec)
    assert received.digest() == spec.digest()
    assert codec.NOT_SENT == {"coordinator_address"}   # only where the submitter reaches the coordinator stays home


def test_a_field_the_codec_dropped_would_be_caught(monkeypatch):
    spec = full_spec()
    monkeypatch.setattr(codec, "_SCALARS", tuple(n for n in codec._SCALARS if n != "seed"))
    with pytest.raises(AssertionError, match="seed"):
        assert_same(codec.spec_from_proto(codec.spec_to_proto(spec)), spec)


def test_empty_on_the_wire_means_the_jobspec_default():
    message = codec.spec_to_proto(full_spec())
    for name in ("rpc_timeout", "restart_timeout", "obfuscation"):
        message.ClearField(name)
    message.fees.ClearField("currency")
    received = codec.spec_from_proto(message)
    assert (received.rpc_timeout, received.restart_timeout) == (JobSpec.rpc_timeout, JobSpec.restart_timeout)
    assert received.obfuscation == JobSpec.obfuscation and received.fees.currency == FeeContract.currency


def test_a_job_file_that_names_nothing_gets_every_jobspec_default():
    parties = [{"name": "bank", "data": "a.csv", "id": "id", "label": "y"}, {"name": "bureau", "data": "b.csv", "id": "id"}]
    spec = parse_job({"job": {"name": "defaults"}, "parties": parties})
    assert spec == JobSpec(name="defaults", parties=spec.parties)
    assert JobSpec.key_bits in KEY_BITS


def test_every_plain_field_is_a_job_file_key():
    spec = full_spec()
    job = {f.name: getattr(spec, f.name) for f in fields(JobSpec)
           if f.name not in ("parties", "fees", "coordinator_address", "binning")}
    job["protected"] = list(spec.protected)
    parties = [{"name": p.name, "data": p.data, "id": list(p.id_columns), "label": p.label or "", "address": p.address}
               for p in spec.parties]
    binning = {**asdict(spec.binning), "special_values": {c: list(v) for c, v in spec.binning.special_values}}
    document = {"job": job, "parties": parties, "fees": spec.fees.to_dict(), "binning": binning,
                "coordinator": {"address": spec.coordinator_address}}
    assert parse_job(document) == spec


def test_steps_order_and_job_ids_are_checked():
    assert Step(0, 5) < Step(1, 0) and str(Step(1, 2)) == "epoch 2 batch 3"
    assert check_job_id("credit-2026-0a1b2c3d", "here") == "credit-2026-0a1b2c3d"
    for bad in ("../etc-0a1b2c3d", "credit", "x" * 200 + "-0a1b2c3d", 17):
        with pytest.raises(DataError, match="is not a job id"):
            check_job_id(bad, "here")
    assert replace(full_spec(), seed=1).digest() != full_spec().digest()


def test_a_job_without_audience_prices_keeps_the_digest_it_had_before_they_existed():
    """Models trained before the audience prices existed are opened by their job's digest: a contract that sets none
    of them states (and digests) only the four older keys; setting one changes the job."""
    plain = FeeContract(currency="CNY", per_step=500, per_overlap_row=1, per_request=2)
    assert set(plain.to_dict()) == {"currency", "per_step", "per_overlap_row", "per_request"}
    assert FeeContract.from_dict(plain.to_dict()) == plain
    spec, _ = load_job(Path(__file__).resolve().parent.parent / "examples" / "default_credit" / "job.toml")
    content = asdict(spec)
    for key in ("coordinator_address", "rpc_timeout", "precompute_epochs", "refill_obfuscators", "restart_timeout"):
        content.pop(key)
    for party in content["parties"]:
        party.pop("address")
    for name in ("per_query", "per_audience_member", "per_conversion"):
        content["fees"].pop(name)   # the digest as computed before these prices existed
    before = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert spec.digest() == before
    assert replace(spec, fees=replace(spec.fees, per_query=1)).digest() != before
