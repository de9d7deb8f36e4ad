"""Malformed messages to every RPC of running daemons: a proper status for each, nothing crashes, and the
consortium trains and scores correctly afterwards."""
from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from fedscore.job_file import ScoringSettings, load_job
from fedscore.crypto.paillier import generate_keypair
from fedscore.daemons.launcher import LocalConsortium
from fedscore.proto import fedscore_pb2 as pb
from fedscore.protocol.scoring.consent import certify_applicant, give_consent
from fedscore.cli.runner import submit
from fedscore.transport.clients.party import PartyJobClient
from fedscore.transport.clients.scoring import ScoringClient

from conftest import assert_descent_from_recorded_start, breast_parties, write_job
from faults import count

# What a daemon may answer to a message it cannot use. INTERNAL would mean an exception nobody handled.
PROPER = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
          grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND,
          grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DATA_LOSS}
PARTY_SERVICES = ("Party", "Jobs", "Training", "Alignment", "Chain", "Scoring")   # all on a party's one port
PARTY_METHODS = [m for name in PARTY_SERVICES for m in pb.DESCRIPTOR.services_by_name[name].methods]
BOUNDARY_INTS = [0, 1, 2, 7, 255, 2**31 - 1, 2**32 - 1, 2**63 - 1]
BOUNDARY_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e308, -1e308, float("inf"), float("-inf"), float("nan"), 5e-324]


def random_message(descriptor, rng: random.Random, job_ids: list[str], depth: int = 0):
    """A message of this type with every field filled at random (boundary values, wrong sizes, real job ids)."""
    message = pb.__dict__[descriptor.name]() if descriptor.name in pb.__dict__ else None
    if message is None:   # a nested or map entry type
        return None
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(message, field.name)
            for _ in range(rng.randint(0, 4)):
                key = rng.choice(["LIMIT_BAL", "x0", "", "\x00", "guest", "host", "a" * 300])
                value_field = field.message_type.fields_by_name["value"]
                target[key] = random_scalar(value_field, rng, job_ids)
            continue
        count = rng.choice([0, 1, 1, 2, 5, 40]) if field.is_repeated else 1
        for _ in range(count):
            if field.type == F.TYPE_MESSAGE:
                if depth > 2:
                    continue
                value = random_message(field.message_type, rng, job_ids, depth + 1)
                if value is None:
                    continue
                if field.is_repeated:
                    getattr(message, field.name).append(value)
                elif rng.random() < 0.8:
                    getattr(message, field.name).CopyFrom(value)
            else:
                value = random_scalar(field, rng, job_ids)
                if field.is_repeated:
                    getattr(message, field.name).append(value)
                elif rng.random() < 0.85:
                    setattr(message, field.name, value)
    return message


def random_scalar(field, rng: random.Random, job_ids: list[str]):
    if field.type in (F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_INT32, F.TYPE_INT64):
        bits = 32 if field.type in (F.TYPE_UINT32, F.TYPE_INT32) else 64
        signed = field.type in (F.TYPE_INT32, F.TYPE_INT64)
        value = rng.choice(BOUNDARY_INTS + [rng.randrange(0, 2**bits)])
        value %= 2**bits
        if signed:
            value = value - 2**bits if value >= 2 ** (bits - 1) else value
        return value
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return rng.choice(BOUNDARY_FLOATS + [rng.uniform(-1e6, 1e6)])
    if field.type == F.TYPE_BOOL:
        return rng.random() < 0.5
    if field.type == F.TYPE_STRING:
        if "job_id" in field.name:
            return rng.choice(job_ids + ["", "nope", "../../etc", "x" * 5000])
        return rng.choice(["", "guest", "host", "short-exponent", "standard", "scoring", "\u0000", "é" * 50,
                           "a" * rng.randint(0, 10_000), "0" * 32, "f" * 64])
    if field.type == F.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 1, 8, 31, 32, 33, 64, 256, 512, 4096, 70_000]))
    raise AssertionError(f"field type {field.type} not covered")


def call(channel: grpc.Channel, method, request) -> grpc.StatusCode:
    """One call of any shape; the status it ended with."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize, timeout = (lambda m: m.SerializeToString()), 20
    try:
        if method.client_streaming:
            requests = iter([request] * random.Random(len(path)).randint(0, 3))
            if method.server_streaming:
                list(channel.stream_stream(path, serialize, bytes)(requests, timeout=timeout))
            else:
                channel.stream_unary(path, serialize, bytes)(requests, timeout=timeout)
        elif method.server_streaming:
            list(channel.unary_stream(path, serialize, bytes)(request, timeout=timeout))
        else:
            channel.unary_unary(path, serialize, bytes)(request, timeout=timeout)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def consortium(tmp_path_factory, breast_folder_module):
    folder = breast_folder_module
    issuer = SigningKey(bytes([5]) * 32)
    spec, base = load_job(write_job(folder, breast_parties(), epochs=2, validation=0.3))
    # plaintext, so that every message reaches the checks of the method it names (under TLS a fuzzer without
    # the coordinator's or card center's certificate would be refused before them; tests/test_tls.py covers that)
    with LocalConsortium(spec, base, folder / "state", 1, (bytes(issuer.verify_key).hex(),), insecure=True) as running:
        report = submit(running.spec, running.coordinator_address, lambda event: None)
        # checked now: the fuzzing may send AbortJob for this job (plaintext lets anyone), which drops its model file
        assert_descent_from_recorded_start(running.spec, running.base_dir, report)
        settings = ScoringSettings(consent_issuers=(bytes(issuer.verify_key).hex(),))
        scoring = ScoringClient(running.spec.card_center.address, running.spec.card_center.name)
        scoring.open_scoring(running.spec, settings.to_json())
        # a job prepared at the partner and left open, so messages about it reach past the first check
        host = PartyJobClient("host", running.spec.party("host").address, "fuzz-job-0badcafe", generate_keypair(512)[0])
        host.prepare_job(running.spec)
        yield running, report, issuer, settings
        scoring.close()
        host.close()


@pytest.fixture(scope="module")
def breast_folder_module(tmp_path_factory):
    import shutil

    from conftest import DATA

    folder = tmp_path_factory.mktemp("fuzz")
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        shutil.copy(DATA / name, folder / name)
    return folder


TRIED: dict[str, int] = {}


@pytest.mark.parametrize("method", PARTY_METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_every_method_answers_malformed_messages_with_a_proper_status(consortium, method):
    running, report, _, _ = consortium
    job_ids = ["fuzz-job-0badcafe", report["job_id"]]
    channels = {p.name: grpc.insecure_channel(p.address) for p in running.spec.parties}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(seed=st.integers(0, 2**32 - 1), target=st.sampled_from(sorted(channels)))
    def fuzz(seed, target):
        rng = random.Random(seed)
        request = random_message(method.input_type, rng, job_ids)
        code = call(channels[target], method, request)
        TRIED[method.name] = TRIED.get(method.name, 0) + 1
        count("malformed messages tried")
        assert code in PROPER, f"{method.name} at {target}: {code} for {request}"[:2000]

    try:
        fuzz()
    finally:
        for channel in channels.values():
            channel.close()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.binary(max_size=3000), which=st.integers(0, 10_000))
def test_raw_bytes_to_any_method_of_either_service_leave_the_daemons_serving(consortium, data, which):
    """Bytes that may not even be a protobuf message: gRPC itself refuses what it cannot decode
    (INTERNAL, "Exception deserializing request!"); what decodes must get a proper status."""
    running, _, _, _ = consortium
    methods = PARTY_METHODS + list(pb.DESCRIPTOR.services_by_name["Coordinator"].methods)
    method = methods[which % len(methods)]
    service = method.containing_service.name
    address = running.coordinator_address if service == "Coordinator" else running.spec.parties[which % 2].address
    path = f"/{method.containing_service.full_name}/{method.name}"
    with grpc.insecure_channel(address) as channel:
        try:
            if method.client_streaming and method.server_streaming:
                list(channel.stream_stream(path)(iter([data]), timeout=20))
            elif method.client_streaming:
                channel.stream_unary(path)(iter([data]), timeout=20)
            elif method.server_streaming:
                list(channel.unary_stream(path)(data, timeout=20))
            else:
                channel.unary_unary(path)(data, timeout=20)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
    count("malformed messages tried")
    assert code in PROPER or (code == grpc.StatusCode.INTERNAL and "deserializ" in details), (service, method.name, code, details)


def test_after_the_fuzzing_the_consortium_still_trains_and_scores(consortium):
    running, report, issuer, settings = consortium
    assert sum(TRIED.values()) >= 1000 or not TRIED   # run alone, this test only checks the daemons
    assert not running.dead_members()
    again = submit(running.spec, running.coordinator_address, lambda event: None)
    assert_descent_from_recorded_start(running.spec, running.base_dir, again)   # from its own secret start
    client = ScoringClient(running.spec.card_center.address, running.spec.card_center.name)
    opened = client.open_scoring(running.spec, settings.to_json(), again["job_id"])
    import pandas as pd

    from conftest import DATA

    row = pd.read_csv(DATA / "breast_hetero_guest.csv").iloc[0]
    key = SigningKey.generate()
    token = give_consent(key, certify_applicant(issuer, str(row["id"]), bytes(key.verify_key)),
                         bytes(issuer.verify_key), str(row["id"]), "guest").to_text()
    reply = client.score(str(row["id"]), {f: float(row[f]) for f in opened.features}, token, opened.job_id)
    assert 0 < reply.probability < 1 and reply.decision in ("approve", "review", "decline")
    client.close()
