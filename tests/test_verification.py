"""Identity verifications: a verifier's signed record sealed on the scoring chain, refused when it should be,
co-signed by partners who cannot read it, and checked later as dispute evidence, each forgery named."""
from __future__ import annotations

import copy
import hashlib
import http.client
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from nacl.signing import SigningKey

from fedscore.cli.demo import SPLIT, write_demo
from fedscore.cli.runner import run_job_file
from fedscore.daemons.launcher import LocalConsortium
from fedscore.job_file import load_job, load_scoring
from fedscore.ledger.block import decode_entry
from fedscore.ledger.store import LedgerStore
from fedscore.transport.clients.scoring import ScoringClient

from fedscore.errors import DataError, DeniedError, FedscoreError, PeerError
from fedscore.ledger.block import sign
from fedscore.ledger.cosign import append_block, settlement_entry
from fedscore.ledger.scoring_rules import REQUEST_ID, entry_digest
from fedscore.ledger.verify import LedgerError, verify_chain
from fedscore.protocol.scoring.consent import applicant_digest
from fedscore.protocol.scoring.secrets import ScoringSecrets
from fedscore.protocol.scoring.verification import (VerificationRecord, VerificationRefused, chain_entry, check_record,
                                                    make_record, new_verification_id, received_record)
from fedscore.protocol.scoring.verification_evidence import (VerificationEvidenceError, check_verification_part,
                                                             verification_part)

from test_chain_rules import SCORING_KEYS, proposed_by_card_center, scoring_chain
from test_scoring_daemons import tls_socket

VERIFIER = SigningKey(b"\x21" * 32)
TRUSTED = {"acme-id": bytes(VERIFIER.verify_key)}
FILES = {"selfie.jpg": b"\xff\xd8 a face " * 50, "id-card.jpg": b"\xff\xd8 a national id card " * 40}
MEMBERS = {name: bytes(key.verify_key) for name, key in SCORING_KEYS.items()}


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def signed(applicant: str = "A-1001", method: str = "face-match", key: SigningKey = VERIFIER,
           files: dict[str, bytes] = FILES) -> VerificationRecord:
    return make_record(key, "acme-id", applicant, method, digests(files))


# -- the record, as the card center receives it ------------------------------------------------------

def test_a_record_signs_every_field_and_the_card_center_refuses_what_it_cannot_trust():
    record = signed()
    assert record.applicant == applicant_digest("A-1001") and "A-1001" not in record.to_text()
    check_record(record, TRUSTED)   # genuine: accepted
    assert VerificationRecord.from_text(record.to_text()) == record
    # every field is under the signature: change any one and it no longer verifies
    for change in [{"applicant": applicant_digest("A-1002")}, {"method": "bank-account"}, {"time": record.time - 1},
                   {"evidence": {**record.evidence, "selfie.jpg": "00" * 32}}]:
        altered = VerificationRecord(**{**record.__dict__, **change})
        with pytest.raises(VerificationRefused, match="^the signature of verifier 'acme-id' does not verify over this record"):
            check_record(altered, TRUSTED)
    # another key under the trusted name: named; a name the card center does not list: named, with those it does
    mallory = SigningKey(b"\x22" * 32)
    with pytest.raises(VerificationRefused, match="signed with a key this card center does not list for it"):
        check_record(signed(key=mallory), TRUSTED)
    with pytest.raises(VerificationRefused, match="^the signature of verifier 'acme-id' does not verify"):
        received_record("A-1001", "face-match", record.time, "acme-id", signed(key=mallory).signature,
                        record.evidence, TRUSTED)
    with pytest.raises(VerificationRefused, match=r"^verifier 'other-id' is not one this card center trusts \(verifiers in its config: acme-id\)$"):
        received_record("A-1001", "face-match", record.time, "other-id", record.signature, record.evidence, TRUSTED)
    assert issubclass(VerificationRefused, DeniedError)   # 403 over HTTPS, PERMISSION_DENIED over gRPC
    with pytest.raises(DataError, match="dated in the future"):
        check_record(make_record(VERIFIER, "acme-id", "A-1001", "face-match", digests(FILES), at=int(time.time()) + 3600),
                     TRUSTED)
    with pytest.raises(DataError, match="method 'Face Match'"):
        make_record(VERIFIER, "acme-id", "A-1001", "Face Match", digests(FILES))
    with pytest.raises(DataError, match="evidence must name 1 to 16 files"):
        make_record(VERIFIER, "acme-id", "A-1001", "face-match", {})
    with pytest.raises(DataError, match="not that of the applicant id sent with it"):
        chain_entry(record, "A-1002", ScoringSecrets(b"\x01" * 32, b"\x02" * 32), 1)


# -- the scoring chain's rules -----------------------------------------------------------------------

def recorded(center, record: VerificationRecord, applicant: str, secrets: ScoringSecrets) -> dict:
    """What CardCenterScorer.record_verification does to the card center's facts: it made this entry."""
    entry = chain_entry(record, applicant, secrets, time.time_ns() // 1_000_000)
    center.rules.facts.answered[entry["verification_id"]] = entry_digest(entry)
    return entry


SECRETS = ScoringSecrets(b"\x31" * 32, b"\x32" * 32)


def test_partners_co_sign_a_verification_they_cannot_read_and_it_bills_nobody(tmp_path):
    center, partners = scoring_chain(tmp_path)
    host = partners["host"].member
    entry = recorded(center, signed(), "A-1001", SECRETS)
    assert not REQUEST_ID.match(entry["verification_id"])   # its id can never be a request's
    text = json.dumps(entry)
    assert "A-1001" not in text and applicant_digest("A-1001").hex() not in text and "acme-id" not in text
    append_block(center, partners, [entry])
    assert host.height == center.height == 2 and entry["verification_id"] in host.rules.seen.requests
    assert center.rules.facts.answered == {}   # on the chain: the card center forgets it made it
    # nothing billed, no settlement disturbed: the settlement after it is of no request, and a settle
    # retried after a verification sees nothing new since the last settlement
    assert host.rules.seen.unsettled == {} and center.rules.settlement_body()["total"] == 0
    append_block(center, partners, [settlement_entry(center, partners)])
    append_block(center, partners, [recorded(center, signed(method="bank-account"), "A-1001", SECRETS)])
    assert center.rules.seen.last_kind == host.rules.seen.last_kind == "scoring_settlement"
    assert verify_chain(host.store.blocks()).blocks == 4

    # the same verification twice, or an entry of another shape, is refused by a partner, naming why
    with pytest.raises(LedgerError, match=f"member 'host' refuses it: verification {entry['verification_id']} is already on the chain"):
        host.sign(proposed_by_card_center(center, [entry]))
    malformed = {
        "a verification entry with fields other than the protocol's": {**entry, "applicant_id": "A-1001"},
        "verification id '0123456789abcdef0123456789abcdef' is not one fedscore issues": {**entry, "verification_id": "0123456789abcdef" * 2},
        "the sealed record must be hex": {**entry, "verification_id": new_verification_id(), "record": "not hex"},
        "the applicant and record digests must be SHA-256 hex": {**entry, "verification_id": new_verification_id(), "record_digest": "ab"},
        "is dated in the future": {**entry, "verification_id": new_verification_id(), "time_ms": time.time_ns() // 10**6 + 3_600_000},
    }
    for reason, bad in malformed.items():
        with pytest.raises(LedgerError, match=f"member 'host' refuses it: .*{reason}"):
            host.sign(proposed_by_card_center(center, [bad]))


def test_only_the_card_center_proposes_a_verification_and_only_one_it_made(tmp_path):
    center, partners = scoring_chain(tmp_path)
    host = partners["host"].member
    entry = chain_entry(signed(), "A-1001", SECRETS, time.time_ns() // 1_000_000)   # not in the card center's facts
    # the card center signs only a verification it made itself (as with scoring entries)
    with pytest.raises(LedgerError, match=f"member 'guest' refuses it: verification {entry['verification_id']} is not an entry this card center made"):
        center.sign(center.propose([entry]))
    # a forged proposal: a block of a verification the card center did not sign, from a partner or an outsider
    block = center.propose([entry])
    for forger in ("host", "mallory"):
        key = SCORING_KEYS.get(forger, SigningKey(b"\x23" * 32))
        with pytest.raises(LedgerError, match="member 'host' refuses it: it is not signed by the proposer 'guest'"):
            host.sign(block.with_signatures({forger: sign(block, key)}))
    assert host.height == 1


# -- the dispute bundle's part ---------------------------------------------------------------------------

@pytest.fixture
def chain_with_verifications(tmp_path):
    """A scoring chain holding verifications of two applicants, in blocks of their own."""
    center, partners = scoring_chain(tmp_path)
    first = recorded(center, signed(), "A-1001", SECRETS)
    append_block(center, partners, [first])
    other = signed("A-2002", files={"face.png": b"another face"})
    append_block(center, partners, [recorded(center, other, "A-2002", SECRETS)])
    blocks = list(center.store.blocks())
    return blocks, first


def test_a_genuine_verification_part_checks_and_reads_as_a_verdict(chain_with_verifications):
    blocks, first = chain_with_verifications
    part = verification_part(blocks, SECRETS, applicant_id="A-1001")
    assert part == verification_part(blocks, SECRETS, verification_id=first["verification_id"])
    assert part["record"]["applicant"] == applicant_digest("A-1001").hex()
    verdict = check_verification_part(part, MEMBERS, FILES, applicant_digest("A-1001"),
                                      genesis_hash=blocks[0].hash().hex())
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(part["record"]["time"]))
    assert verdict == (f"applicant {applicant_digest('A-1001').hex()} verified by acme-id "
                       f"(key {bytes(VERIFIER.verify_key).hex()[:16]}…) by face-match at {when}, with 2 evidence files "
                       f"matching; recorded in block 1 of scoring chain job-1 co-signed by guest, host")
    # only the disputed applicant's record: nothing of the other applicant's
    text = json.dumps(part)
    assert applicant_digest("A-2002").hex() not in text and "face.png" not in text
    # members as a genesis table, or hex, read the same
    table = {n: {"role": "x", "key": k.hex()} for n, k in MEMBERS.items()}
    assert check_verification_part(part, table, FILES) == check_verification_part(part, {n: k.hex() for n, k in MEMBERS.items()}, FILES)
    with pytest.raises(FedscoreError, match="^the scoring chain holds no verification of this applicant by bank-account"):
        verification_part(blocks, SECRETS, applicant_id="A-1001", method="bank-account")


def forgeries(blocks, part: dict) -> dict[str, tuple[dict, dict[str, bytes], bytes | None]]:
    """Each single-field forgery: (the part, the files, the disputed applicant) and the failure it must name."""
    other = verification_part(blocks, SECRETS, applicant_id="A-2002")
    me = applicant_digest("A-1001")

    def changed(edit) -> dict:
        forged = copy.deepcopy(part)
        edit(forged)
        return forged

    def entry_altered(forged):
        forged["entry"]["time_ms"] += 1

    def entry_and_proof_altered(forged):
        forged["entry"]["time_ms"] += 1
        forged["proof"]["entry"] = json.dumps(forged["entry"], sort_keys=True, separators=(",", ":"))

    def proof_of_another_block(forged):
        forged["proof"] = {**forged["proof"], **{k: other["proof"][k] for k in ("block", "audit_path", "signatures", "index")}}

    def signature_dropped(forged):
        del forged["proof"]["signatures"]["host"]

    return {
        "evidence file 'selfie.jpg' is altered: its SHA-256 is": (part, {**FILES, "selfie.jpg": FILES["selfie.jpg"] + b"."}, me),
        "evidence file 'id-card.jpg' is missing": (part, {"selfie.jpg": FILES["selfie.jpg"]}, me),
        "the record is of applicant .* not of the disputed applicant": (other, {"face.png": b"another face"}, me),
        "the record's SHA-256 .* is not the chain entry's record digest": (changed(lambda f: f.update(record=other["record"])), FILES, None),
        "the chain entry is not the entry the inclusion proof includes": (changed(entry_altered), FILES, me),
        "the inclusion proof does not verify: the entry's audit path does not lead to block 1's Merkle root":
            (changed(entry_and_proof_altered), FILES, me),
        "the inclusion proof does not verify: the entry's audit path does not lead to block 2's Merkle root":
            (changed(proof_of_another_block), FILES, me),
        "the inclusion proof does not verify: block 1 lacks a valid signature from member 'host'":
            (changed(signature_dropped), FILES, me),
    }


def test_each_single_field_forgery_fails_naming_it(chain_with_verifications):
    blocks, _ = chain_with_verifications
    part = verification_part(blocks, SECRETS, applicant_id="A-1001")
    for reason, (forged, files, applicant) in forgeries(blocks, part).items():
        with pytest.raises(VerificationEvidenceError, match=f"^verification evidence: {reason}"):
            check_verification_part(forged, MEMBERS, files, applicant)
    # a chain of other members, or another genesis than the reader trusts
    strangers = {**MEMBERS, "host": bytes(SigningKey(b"\x24" * 32).verify_key)}
    with pytest.raises(VerificationEvidenceError, match="not a scoring chain of the members given"):
        check_verification_part(part, strangers, FILES)
    with pytest.raises(VerificationEvidenceError, match=f"not {'ab' * 32}$"):
        check_verification_part(part, MEMBERS, FILES, genesis_hash="ab" * 32)
    with pytest.raises(VerificationEvidenceError, match="^verification evidence: not a fedscore.verification-evidence/1 part"):
        check_verification_part({"record": part["record"]}, MEMBERS, FILES)
    assert check_verification_part(part, MEMBERS, FILES)   # the forgeries changed copies only


def test_a_record_the_verifier_did_not_sign_fails_even_when_the_chain_holds_it(tmp_path):
    """The chain fixes a record, it does not vouch for it: a card center that recorded a bad signature
    (skipping its own check) is caught by whoever checks the evidence."""
    center, partners = scoring_chain(tmp_path)
    genuine = signed()
    forged = VerificationRecord(**{**genuine.__dict__, "signature": SigningKey(b"\x25" * 32).sign(genuine.message()).signature})
    append_block(center, partners, [recorded(center, forged, "A-1001", SECRETS)])
    part = verification_part(list(center.store.blocks()), SECRETS, applicant_id="A-1001")
    with pytest.raises(VerificationEvidenceError, match="^verification evidence: the signature of verifier 'acme-id' on the record does not verify$"):
        check_verification_part(part, MEMBERS, FILES, applicant_digest("A-1001"))


def test_checking_a_verification_part_is_fast_and_small(chain_with_verifications):
    """Bounds far above what bench/verification.py measures: a part that grew or slowed by orders of magnitude."""
    blocks, _ = chain_with_verifications
    part = verification_part(blocks, SECRETS, applicant_id="A-1001")
    size = len(json.dumps(part).encode("utf-8"))
    runs = []
    for _ in range(50):
        started = time.perf_counter()
        check_verification_part(part, MEMBERS, FILES, applicant_digest("A-1001"))
        runs.append(time.perf_counter() - started)
    median_ms = statistics.median(runs) * 1000
    assert size < 16_000 and median_ms < 100


# -- through the real card center daemon ------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The demo consortium on its first 3000 applicants, one epoch, 512-bit keys (tests only)."""
    folder = tmp_path_factory.mktemp("verification")
    job = write_demo(folder, epochs=1, key_bits=512, rows=3000)
    run_job_file(job, local=True, workers=1)
    return folder


def post(address: str, path: str, document: dict, identity) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(*address.split(":"), timeout=30)
    connection.sock = tls_socket(address, identity)
    try:
        connection.request("POST", path, json.dumps(document), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def as_json(record: VerificationRecord, applicant: str) -> dict:
    """What a verification system sends to POST /v1/verifications."""
    return {"applicant_id": applicant, "method": record.method, "time": record.time, "verifier": record.verifier,
            "signature": record.signature.hex(), "evidence": record.evidence}


def job_at(trained: Path, spec, path: Path) -> Path:
    """The demo's job file with the running daemons' addresses, as a client away from --local reads it."""
    head, *sections = (trained / "job.toml").read_text().split("[[parties]]")
    for number, party in enumerate(spec.parties):
        sections[number] = re.sub(r'address = "[^"]*"', f'address = "{party.address}"', sections[number])
    path.write_text("[[parties]]".join([head, *sections]))
    return path


def test_a_verification_recorded_through_the_card_center_reaches_the_chain_co_signed_and_checks(trained, tmp_path):
    spec, base = load_job(trained / "job.toml")
    settings = load_scoring(trained / "job.toml")
    applicants = pd.read_csv(trained / "applicants.csv", dtype=str)
    row = applicants.iloc[0]
    features = [c for c in SPLIT["card_center"] if c not in spec.protected]
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    key_file = tmp_path / "acme-id.key"
    key_file.write_text(f"# the test verifier\n{bytes(VERIFIER).hex()}\n")
    trusted = {"acme-id": bytes(VERIFIER.verify_key).hex()}
    with LocalConsortium(spec, base, trained / "state", 1, settings.consent_issuers, verifiers=trusted) as consortium:
        me = consortium.card_center_identity
        client = ScoringClient(consortium.spec.card_center.address, "card_center", me)
        opened = client.open_scoring(consortium.spec, settings.to_json())
        http_address = consortium.http_addresses["card_center"]

        by_grpc = client.record_verification("A-1001", signed(), opened.job_id)
        status, by_http = post(http_address, "/v1/verifications", as_json(signed(method="bank-account"), "A-1001"), me)
        assert status == 200 and by_http["job_id"] == by_grpc.job_id == opened.job_id
        ids = {by_grpc.verification_id, by_http["verification_id"]}
        scored = client.score(row["id"], {c: float(row[c]) for c in features}, row["consent"])   # one billed request

        # refused, naming why: an untrusted verifier, a signature that does not verify, over gRPC and HTTPS
        mallory = SigningKey(b"\x26" * 32)
        with pytest.raises(DeniedError, match=r"verifier 'other-id' is not one this card center trusts \(verifiers in its config: acme-id\)"):
            client.record_verification("A-1001", make_record(mallory, "other-id", "A-1001", "face-match", digests(FILES)))
        with pytest.raises(DeniedError, match="the signature of verifier 'acme-id' does not verify over this record"):
            client.record_verification("A-1001", signed(key=mallory))
        status, refused = post(http_address, "/v1/verifications", {**as_json(signed(), "A-1001"), "applicant_id": "A-1002"}, me)
        assert status == 403 and "the signature of verifier 'acme-id' does not verify" in refused["error"]
        status, refused = post(http_address, "/v1/verifications", {**as_json(signed(), "A-1001"), "verifier": "other-id"}, me)
        assert status == 403 and "verifier 'other-id' is not one this card center trusts" in refused["error"]
        status, refused = post(http_address, "/v1/verifications", {k: v for k, v in as_json(signed(), "A-1001").items() if k != "signature"}, me)
        assert status == 400 and refused["error"].startswith("missing field 'signature'")
        # only the card center's own certificate records one, on either port
        bureau = consortium.identity("bureau")
        status, refused = post(http_address, "/v1/verifications", as_json(signed(), "A-1001"), bureau)
        assert status == 403 and refused["error"] == "recording a verification is for 'card_center' only; refused 'bureau'"
        stranger = ScoringClient(consortium.spec.card_center.address, "card_center", bureau)
        with pytest.raises(DeniedError, match="RecordVerification is for this member itself only; refused 'bureau'"):
            stranger.record_verification("A-1001", signed())
        stranger.close()

        # the command, as an operator runs it against the running card center
        done = subprocess.run(
            [sys.executable, "-m", "fedscore", "verification", "record", "--job", str(job_at(trained, consortium.spec, tmp_path / "job.toml")),
             "--tls", str(consortium.certs_dir / "card_center"), "--applicant", "A-3003", "--method", "face-match",
             "--verifier", "acme-id", "--verifier-key", str(key_file), "--evidence", *(str(tmp_path / n) for n in FILES),
             "--json"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        by_cli = json.loads(done.stdout)
        assert by_cli["job_id"] == opened.job_id and by_cli["evidence"] == digests(FILES)
        ids.add(by_cli["verification_id"])
        settled = json.loads(client.settle(opened.job_id).settlement_json)
        client.close_scoring(opened.job_id)   # every pending entry goes on the chain
        client.close()

    # every replica holds the same chain, each block signed by every member, with the three verifications
    replicas = {p: list(LedgerStore(next((trained / "state" / p / "jobs").glob("*/scoring.sqlite")), read_only=True).blocks())
                for p in ("card_center", "bureau", "ecommerce")}
    assert len({verify_chain(blocks).head for blocks in replicas.values()}) == 1
    for blocks in replicas.values():
        entries = [e for b in blocks for e in b.decoded()]
        assert {e["verification_id"] for e in entries if e["kind"] == "verification"} == ids
    # the settlement billed the one scored request, not the verifications
    answered = 2 - len(scored.partners_missing)
    assert sum(line["requests"] for line in settled["lines"]) == answered

    # the card center's evidence for a dispute, checked against the files it hands over
    blocks = replicas["card_center"]
    secrets = ScoringSecrets.load_or_create(trained / "state" / "card_center" / "scoring-secrets")
    members = decode_entry(blocks[0].entries[0])["members"]
    for applicant, method in (("A-1001", "face-match"), ("A-1001", "bank-account"), ("A-3003", "face-match")):
        part = verification_part(blocks, secrets, applicant_id=applicant, method=method)
        verdict = check_verification_part(part, members, FILES, applicant_digest(applicant), blocks[0].hash().hex())
        assert verdict.startswith(f"applicant {applicant_digest(applicant).hex()} verified by acme-id ")
        assert f"by {method} at " in verdict and verdict.endswith("co-signed by bureau, card_center, ecommerce")
    with pytest.raises(VerificationEvidenceError, match="evidence file 'selfie.jpg' is altered"):
        check_verification_part(part, members, {**FILES, "selfie.jpg": b"another photo"}, applicant_digest("A-3003"))


def test_a_verification_is_journalled_before_it_is_acknowledged_and_survives_a_restart_once(tmp_path):
    """In the card center's scoring process: verifications wait with the scoring entries, in the same
    blocks; a block not co-signed and a restart lose none and record none twice; fees count requests only."""
    from test_scoring import Consortium

    c = Consortium(tmp_path)
    made = []
    for row in range(4):
        c.score(row)
        entry = chain_entry(signed(f"A-{row}"), f"A-{row}", c.secrets, time.time_ns() // 1_000_000)
        c.center.record_verification(entry)
        made.append(entry["verification_id"])
    journalled = [json.loads(line) for line in (tmp_path / "guest" / "pending.jsonl").read_text().splitlines()]
    assert [e["verification_id"] for e in journalled if e["kind"] == "verification"] == made
    c.partners["mirror"].fail_proposals = 1
    with pytest.raises(PeerError):
        c.batcher.flush()                        # block 1 of 7 entries is proposed, not co-signed
    c.stop_center()
    for partner in c.partners.values():
        partner.stop()
        partner.start()
    c.start_center()
    assert c.center.pending_count() == 1 and c.batcher.has_proposal   # the last verification still waits
    assert c.batcher.flush() == 4                # scoring entries written; the verifications went with them
    for member in (c.member, *(p.member for p in c.partners.values())):
        entries = [e for b in member.store.blocks() for e in b.decoded()]
        assert sorted(e["verification_id"] for e in entries if e["kind"] == "verification") == sorted(made)
    assert (tmp_path / "guest" / "pending.jsonl").read_text() == ""   # all on the chain: the journal is empty
    c.stop_center()
    c.start_center()
    assert c.center.pending_count() == 0 and not c.batcher.has_proposal and c.batcher.flush() == 0


def test_the_card_center_config_lists_its_verifiers_by_name_and_key(tmp_path):
    from fedscore.daemons.config import load_party_config
    from fedscore.errors import ConfigError

    key = bytes(VERIFIER.verify_key).hex()
    config = tmp_path / "party.toml"
    config.write_text(f'[party]\nname = "card_center"\nverifiers = {{ acme-id = "{key.upper()}" }}\n')
    assert load_party_config(config).verifiers == (("acme-id", key),)
    for bad in ('{ acme-id = "abc" }', '{ "no spaces" = "' + key + '" }', '["acme-id"]'):
        config.write_text(f'[party]\nname = "card_center"\nverifiers = {bad}\n')
        with pytest.raises(ConfigError, match="verifiers must"):
            load_party_config(config)


def test_keygen_then_record_with_local_daemons_puts_it_on_the_chain(trained, tmp_path):
    """The commands as an operator trying it out runs them: a verifier's key, the config line, one record."""
    done = subprocess.run([sys.executable, "-m", "fedscore", "verification", "keygen", "--name", "acme-id",
                           "--out", str(tmp_path / "acme-id.key"), "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    public = json.loads(done.stdout)["public_key"]
    assert (tmp_path / "acme-id.key").stat().st_mode & 0o077 == 0
    again = subprocess.run([sys.executable, "-m", "fedscore", "verification", "keygen", "--name", "acme-id",
                            "--out", str(tmp_path / "acme-id.key")], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "is never overwritten" in again.stderr
    job = trained / "job-verifying.toml"   # beside the data, so --local finds the trained state
    job.write_text(re.sub(r"(?m)^verifiers = .*$", f'verifiers = {{ acme-id = "{public}" }}',   # instead of the demo's
                          (trained / "job.toml").read_text(), count=1))
    (tmp_path / "selfie.jpg").write_bytes(FILES["selfie.jpg"])
    done = subprocess.run(
        [sys.executable, "-m", "fedscore", "verification", "record", "--job", str(job), "--local", "--applicant", "A-4004",
         "--method", "face-match", "--verifier", "acme-id", "--verifier-key", str(tmp_path / "acme-id.key"),
         "--evidence", str(tmp_path / "selfie.jpg")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.match(r"^verification v[0-9a-f]{31} recorded on model \S+'s scoring chain: applicant [0-9a-f]{16}… by "
                    r"face-match, verifier acme-id, 1 evidence file \(their SHA-256 only; the files stay here\)$", done.stdout)
    blocks = list(LedgerStore(next((trained / "state" / "bureau" / "jobs").glob("*/scoring.sqlite")), read_only=True).blocks())
    secrets = ScoringSecrets.load_or_create(trained / "state" / "card_center" / "scoring-secrets")
    part = verification_part(blocks, secrets, applicant_id="A-4004")
    verdict = check_verification_part(part, decode_entry(blocks[0].entries[0])["members"],
                                      {"selfie.jpg": FILES["selfie.jpg"]}, applicant_digest("A-4004"))
    assert "verified by acme-id" in verdict and "with 1 evidence file matching;" in verdict
