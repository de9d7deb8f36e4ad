"""Disputes from chain evidence: consent and fee bundles built from a scoring chain, checked offline.

Most tests build a small scoring chain in process (three members, every block co-signed) and drive the pure
core (fedscore.ledger.evidence, consent_evidence, fee_evidence); one runs the commands against the chain a real
consortium's daemons kept.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time

import pytest
from nacl.signing import SigningKey

from fedscore.ledger.block import encode_entry, make_block, sign
from fedscore.ledger.consent_evidence import check_consent_bundle, consent_bundle, consent_verdict
from fedscore.ledger.evidence import EvidenceError, Excerpt
from fedscore.ledger.fee_evidence import billed_requests, check_fee_bundle, fee_bundle, fee_verdict
from fedscore.ledger.scoring_rules import ScoringSeen, contributed, mark, scoring_entry
from fedscore.ledger.settlement import countersign, scoring_settlement_body, signers
from fedscore.protocol.scoring.consent import ConsentPolicy, applicant_digest, certify_applicant, give_consent
from fedscore.protocol.scoring.secrets import ScoringSecrets

KEYS = {"guest": SigningKey(bytes([1]) * 32), "host": SigningKey(bytes([2]) * 32), "mirror": SigningKey(bytes([3]) * 32)}
ISSUER = SigningKey(bytes([9]) * 32)
POLICY = ConsentPolicy(frozenset({bytes(ISSUER.verify_key)}), max_age=30 * 86_400)
SECRETS = ScoringSecrets(bytes([5]) * 32, bytes([6]) * 32)
JOB = "0123456789abcdef0123456789abcdef"
FEES = {"currency": "CNY", "per_step": 0, "per_overlap_row": 0, "per_request": 3}
DAY_MS = 86_400_000
PARTNERS = ("host", "mirror")


def token_for(applicant: str, card_center: str = "guest", **kwargs) -> str:
    key = SigningKey.generate()
    certificate = certify_applicant(ISSUER, applicant, bytes(key.verify_key))
    return give_consent(key, certificate, bytes(ISSUER.verify_key), applicant, card_center, **kwargs).to_text()


class Chain:
    """A model's scoring chain as its three members keep it: every block signed by all of them."""

    def __init__(self, job: str = JOB):
        self.blocks = []
        self.genesis = {
            "kind": "scoring_start", "job_id": job, "job_name": "test", "training_head": "ef" * 32, "fees": FEES,
            "members": {n: {"role": "card_center" if n == "guest" else "partner", "key": bytes(k.verify_key).hex()}
                        for n, k in KEYS.items()},
        }
        self.keys = {p: SECRETS.pair_key(job, p) for p in PARTNERS}
        self.seen = ScoringSeen(dict(self.keys))
        self.applicants: dict[str, str] = {}   # request id -> applicant id
        self.clock = time.time_ns() - 90 * DAY_MS * 1_000_000
        self.append([self.genesis])

    def append(self, entries: list[dict]) -> None:
        self.clock += 1_000_000
        block = make_block(self.blocks[-1] if self.blocks else None, entries, self.clock)
        self.blocks.append(block.with_signatures({n: sign(block, k) for n, k in KEYS.items()}))
        for entry in entries:
            self.seen.add(entry)

    def request(self, applicant: str, time_ms: int, token: str | None = None, answered=PARTNERS) -> dict:
        request_id = f"{len(self.applicants) + 1:032x}"
        token = token or token_for(applicant, issued_at=time_ms // 1000 - 600)
        from fedscore.protocol.scoring.consent import ConsentToken

        tags = {p: SECRETS.tag(request_id, p) for p in PARTNERS}
        marks = {p: {"tag": tags[p], "mark": mark(self.keys[p], tags[p], p in answered)} for p in PARTNERS}
        self.applicants[request_id] = applicant
        return scoring_entry(request_id, time_ms, SECRETS.salted_applicant(applicant), SECRETS.seal_consent(token),
                             ConsentToken.from_text(token).digest(), marks)

    def settlement(self) -> dict:
        body = scoring_settlement_body(self.genesis, self.seen)
        return {**body, "signatures": {s: countersign(KEYS[s], encode_entry(body)).hex() for s in signers(body)}}

    def scoring(self) -> list[dict]:
        return [e for b in self.blocks for e in b.decoded() if e["kind"] == "scoring"]


@pytest.fixture(scope="module")
def chain() -> Chain:
    """Two settlements of twelve requests over six blocks; the mirror answers every other one."""
    c = Chain()
    start = time.time_ns() // 1_000_000 - 60 * DAY_MS   # scored two months ago: the dispute comes later
    for block in range(3):
        c.append([c.request(f"A-{block}{i}", start + (4 * block + i) * 1000,
                            answered=PARTNERS if i % 2 else ("host",)) for i in range(4)])
        if block == 1:
            c.append([c.settlement()])
    c.append([c.settlement()])
    return c


def bundle_of(c: Chain, request_id: str, **changes) -> dict:
    entry = next(e for e in c.scoring() if e["request_id"] == request_id)
    token = SECRETS.open_consent(entry["consent"])
    applicant = applicant_digest(c.applicants[request_id])
    return consent_bundle(c.blocks, request_id, changes.get("token", token), changes.get("applicant", applicant), POLICY)


def genesis_of(c: Chain) -> str:
    return c.blocks[0].hash().hex()


# -- consent bundles ------------------------------------------------------------------------------

def test_a_genuine_consent_bundle_verifies_and_says_what_it_shows(chain):
    request = chain.scoring()[5]["request_id"]
    bundle = bundle_of(chain, request)
    found = check_consent_bundle(bundle, genesis_of(chain)[:16], applicant_id=chain.applicants[request])
    digest = applicant_digest(chain.applicants[request]).hex()
    assert (found["applicant_digest"], found["card_center"], found["purpose"], found["block"]) == (
        digest, "guest", "credit-card-application", 2)
    assert found["co_signed_by"] == ["guest", "host", "mirror"]
    verdict = consent_verdict(found)
    assert verdict.startswith(f"applicant {digest} consented to guest for credit-card-application at ")
    assert f"recorded as request {request} at " in verdict and "in block 2 co-signed by guest, host, mirror" in verdict


def test_a_bundle_reveals_nothing_of_other_requests(chain):
    request = chain.scoring()[5]["request_id"]
    text = json.dumps(bundle_of(chain, request))
    for entry in chain.scoring():
        if entry["request_id"] == request:
            assert entry["consent_digest"] in text and SECRETS.open_consent(entry["consent"]) in text
            continue
        secrets = [entry["request_id"], entry["applicant"], entry["consent"], entry["consent_digest"],
                   SECRETS.open_consent(entry["consent"]), applicant_digest(chain.applicants[entry["request_id"]]).hex()]
        secrets += [value for p in PARTNERS for value in entry["partners"][p].values()]
        leaked = [value for value in secrets if value in text]
        assert not leaked, f"request {entry['request_id']}: {leaked}"


def forged(chain: Chain, case: str) -> tuple[dict, str, str | None]:
    """(bundle, genesis the reader trusts, applicant id the reader names) with one thing changed."""
    requests = chain.scoring()
    request = requests[5]["request_id"]
    bundle, genesis, applicant = bundle_of(chain, request), genesis_of(chain), None
    if case == "another applicant's token":
        bundle["token"] = SECRETS.open_consent(requests[2]["consent"])
    elif case == "a bundle about another applicant":
        bundle = bundle_of(chain, request, applicant=applicant_digest(chain.applicants[requests[2]["request_id"]]))
    elif case == "the reader's applicant is not the bundle's":
        applicant = chain.applicants[requests[2]["request_id"]]
    elif case == "an altered entry":
        entry = json.loads(bundle["record"]["entry"])
        bundle["record"]["entry"] = encode_entry({**entry, "time_ms": entry["time_ms"] + 1}).decode()
    elif case == "a proof from another block":   # the entry and its path, under block 1's genuine header and signatures
        bundle["record"]["height"] = 1
        bundle["chain"]["blocks"]["1"] = Excerpt(chain.blocks).block(1)
    elif case == "a dropped signature":
        del bundle["chain"]["blocks"]["2"]["signatures"]["mirror"]
    elif case == "a broken signature":
        signatures = bundle["chain"]["blocks"]
        signatures["2"]["signatures"]["host"] = signatures["0"]["signatures"]["host"]   # block 0's
    elif case == "a genesis not matching --genesis":
        genesis = Chain(job="f" * 32).blocks[0].hash().hex()
    elif case == "a missing header":
        del bundle["chain"]["blocks"]["2"]
    elif case == "another chain's bundle":
        other = Chain(job="e" * 32)
        other.append([other.request("A-9", time.time_ns() // 1_000_000)])
        bundle = bundle_of(other, other.scoring()[0]["request_id"])
    else:
        raise AssertionError(case)
    return bundle, genesis, applicant


@pytest.mark.parametrize("case, message", [
    ("another applicant's token", "the consent token's SHA-256 is .* not the consent digest .* another token"),
    ("a bundle about another applicant", "does not certify the token's key for applicant .* another applicant's"),
    ("the reader's applicant is not the bundle's", "the bundle is about applicant .* not 'A-02'"),
    ("an altered entry", "audit path does not lead to block 2's Merkle root"),
    ("a proof from another block", "audit path does not lead to block 1's Merkle root"),
    ("a dropped signature", "block 2 .* carries no signature from member 'mirror'"),
    ("a broken signature", "block 2: the signature of member 'host' does not verify"),
    ("a genesis not matching --genesis", "the bundle's genesis is .* not the expected .* another chain"),
    ("a missing header", "cites block 2, whose header the bundle does not carry"),
    ("another chain's bundle", "the bundle's genesis is .* not the expected"),
])
def test_each_single_forgery_fails_naming_it(chain, case, message):
    bundle, genesis, applicant = forged(chain, case)
    with pytest.raises(EvidenceError, match=message):
        check_consent_bundle(bundle, genesis, applicant_id=applicant)


def recorded_with(token_change: dict, issued_days_before: float) -> tuple[Chain, str]:
    """A chain whose one request recorded a token as given (the card center's own record is the forgery)."""
    c = Chain()
    at = time.time_ns() // 1_000_000 - 45 * DAY_MS
    token = token_for("B-1", issued_at=int(at / 1000 - issued_days_before * 86_400), **token_change)
    c.append([c.request("B-1", at, token=token)])
    return c, c.scoring()[0]["request_id"]


@pytest.mark.parametrize("change, days, message", [
    ({"card_center": "rival"}, 0.01, "the consent was given to card center 'rival', not to 'guest'"),
    ({"purpose": "marketing"}, 0.01, "the consent is for purpose 'marketing', not credit-card-application"),
    ({}, 31, "the consent was 31 days old when request .* was made .* accepts at most 30 days"),
    ({}, -1, "the consent is dated .* after request .* was made"),
])
def test_a_recorded_token_that_did_not_allow_the_request_fails_naming_why(change, days, message):
    c, request = recorded_with(change, days)
    with pytest.raises(EvidenceError, match=message):
        check_consent_bundle(bundle_of(c, request), genesis_of(c))


def test_the_age_is_judged_at_the_request_not_today():
    c, request = recorded_with({}, 29)    # 29 days old when scored, 74 days old today: it allowed the request
    assert check_consent_bundle(bundle_of(c, request), genesis_of(c))["ok"]


def test_an_untrusted_issuer_and_a_short_genesis_prefix_fail():
    c = Chain()
    at = time.time_ns() // 1_000_000
    stranger = SigningKey.generate()
    key = SigningKey.generate()
    token = give_consent(key, certify_applicant(stranger, "C-1", bytes(key.verify_key)), bytes(stranger.verify_key),
                         "C-1", "guest", issued_at=at // 1000).to_text()
    c.append([c.request("C-1", at, token=token)])
    bundle = bundle_of(c, c.scoring()[0]["request_id"])
    with pytest.raises(EvidenceError, match="certified by issuer .* whom the card center's policy does not trust"):
        check_consent_bundle(bundle, genesis_of(c))
    with pytest.raises(EvidenceError, match="at least its first 16 hex digits"):
        check_consent_bundle(bundle, genesis_of(c)[:8])


# -- fee bundles ----------------------------------------------------------------------------------

def test_a_genuine_fee_bundle_verifies_for_anyone_and_for_the_partner(chain):
    for number, count in ((1, 4), (2, 2)):   # the mirror answered every other request: of eight, then of four
        billed, settled, _ = billed_requests(chain.blocks, "mirror", number, chain.keys["mirror"])
        line = next(line for line in settled[2]["lines"] if line["payee"] == "mirror")
        assert len(billed) == line["requests"] == count
        bundle = fee_bundle(chain.blocks, "mirror", number, SECRETS.pair_key(JOB, "mirror"))
        anyone = check_fee_bundle(bundle, genesis_of(chain))
        assert anyone["requests"] == count and anyone["amount"] == 3 * count and not anyone["marks_checked"]
        partner = check_fee_bundle(bundle, genesis_of(chain), chain.keys["mirror"], chain.blocks)
        assert partner["replica_checked"] and partner["request_ids"] == [e["request_id"] for _, _, e in billed]
        assert fee_verdict(partner).startswith(f"settlement #{number} (block {settled[0]}) bills mirror for {count} requests, {3 * count} CNY (minor units)")
        assert "every one is marked as answered by mirror" in fee_verdict(partner)


def test_a_fee_bundle_reveals_nothing_of_requests_not_billed_to_the_partner(chain):
    text = json.dumps(fee_bundle(chain.blocks, "mirror", 1, chain.keys["mirror"]))
    for entry in chain.scoring():
        billed = contributed(entry, "mirror", chain.keys["mirror"])
        assert (entry["request_id"] in text) == (billed and entry["request_id"] <= f"{8:032x}")
        if entry["request_id"] not in text:
            assert entry["partners"]["mirror"]["tag"] not in text and entry["consent"] not in text
        assert SECRETS.open_consent(entry["consent"]) not in text   # no token, billed or not


def fee_forged(chain: Chain, case: str) -> dict:
    bundle = fee_bundle(chain.blocks, "mirror", 2, chain.keys["mirror"])
    unbilled = next((h, i) for h, b in enumerate(chain.blocks) for i, e in enumerate(b.decoded())
                    if e["kind"] == "scoring" and h > 3 and not contributed(e, "mirror", chain.keys["mirror"]))
    excerpt = Excerpt(chain.blocks)
    if case == "a request not billed to the partner inserted":
        bundle["billed"].append(excerpt.record(*unbilled))
    elif case == "a billed request swapped for one not billed":
        bundle["billed"][0] = excerpt.record(*unbilled)
    elif case == "a request of the settlement before":
        earlier = next((h, i) for h, b in enumerate(chain.blocks) for i, e in enumerate(b.decoded())
                       if e["kind"] == "scoring" and contributed(e, "mirror", chain.keys["mirror"]))
        bundle["billed"][0] = excerpt.record(*earlier)
    elif case == "a billed request dropped":
        bundle["billed"].pop()
    elif case == "the line altered":
        entry = json.loads(bundle["settlement_record"]["entry"])
        entry["lines"][1]["requests"] += 1
        bundle["settlement_record"]["entry"] = encode_entry(entry).decode()
    elif case == "a request cited twice":
        bundle["billed"][1] = bundle["billed"][0]
    else:
        raise AssertionError(case)
    for height in {int(record["height"]) for record in bundle["billed"]}:   # the blocks now cited, as the card center gives them
        bundle["chain"]["blocks"].setdefault(str(height), excerpt.block(height))
    return bundle


@pytest.mark.parametrize("case, key, message", [
    ("a request not billed to the partner inserted", False, "settlement #2 bills 'mirror' for 2 requests; the bundle cites 3"),
    ("a billed request swapped for one not billed", True, "is not billed to 'mirror': its mark says 'mirror' did not contribute"),
    ("a request of the settlement before", False, "is not between settlement #1 and #2: that settlement did not bill it"),
    ("a billed request dropped", False, "settlement #2 bills 'mirror' for 2 requests; the bundle cites 1"),
    ("the line altered", False, "audit path does not lead to block 5's Merkle root"),
    ("a request cited twice", False, "is cited twice"),
])
def test_each_fee_forgery_fails_naming_it(chain, case, key, message):
    bundle = fee_forged(chain, case)
    with pytest.raises(EvidenceError, match=message):
        check_fee_bundle(bundle, genesis_of(chain), chain.keys["mirror"] if key else None)


def test_the_partner_catches_a_swap_only_its_key_or_replica_reveals(chain):
    bundle = fee_forged(chain, "a billed request swapped for one not billed")
    assert check_fee_bundle(bundle, genesis_of(chain))["requests"] == 2   # anyone: the count still matches
    with pytest.raises(EvidenceError, match="not billed to 'mirror'"):
        check_fee_bundle(bundle, genesis_of(chain), chain.keys["mirror"], chain.blocks)
    other = Chain(job="e" * 32)
    with pytest.raises(EvidenceError, match="the replica given is of another chain than the bundle's"):
        check_fee_bundle(fee_bundle(chain.blocks, "mirror", 2, chain.keys["mirror"]), genesis_of(chain),
                         chain.keys["mirror"], other.blocks)


def test_a_block_of_another_chain_the_same_members_signed_is_caught_by_a_replica(chain):
    """Offline, a bundle shows its entry is in a block the genesis' members co-signed; which of their chains holds
    the block, a replica shows. Here the request is on another model's chain, grafted onto this chain's genesis."""
    other = Chain(job="e" * 32)
    other.append([other.request("D-1", time.time_ns() // 1_000_000)])
    grafted = bundle_of(other, other.scoring()[0]["request_id"])
    grafted["chain"]["genesis"] = Excerpt(chain.blocks).record(0, 0)
    grafted["chain"]["blocks"]["0"] = Excerpt(chain.blocks).block(0)
    assert check_consent_bundle(grafted, genesis_of(chain))["ok"]
    with pytest.raises(EvidenceError, match="block 1 in the bundle is not block 1 of the replica given: it is from another chain"):
        check_consent_bundle(grafted, genesis_of(chain), replica=chain.blocks)
    genuine = bundle_of(chain, chain.scoring()[0]["request_id"])
    assert check_consent_bundle(genuine, genesis_of(chain), replica=chain.blocks)["replica_checked"]


# -- the commands, against the chain a real consortium kept --------------------------------------

def fedscore(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fedscore", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo consortium on 5000 applicants, 2 epochs, 512-bit keys; its new applicants scored and settled."""
    import pandas as pd

    from fedscore.cli.demo import write_demo
    from fedscore.cli.runner import run_job_file, score_file

    folder = tmp_path_factory.mktemp("disputes")
    job = write_demo(folder, epochs=2, key_bits=512, rows=5000)
    run_job_file(job, local=True, workers=1)
    result = score_file(job, folder / "applicants.csv", folder / "scored.csv", local=True, settle=True)
    assert result["failed"] == 0
    return folder, pd.read_csv(folder / "scored.csv", dtype=str, keep_default_na=False)


def test_the_commands_open_and_check_disputes_on_a_real_scoring_chain(served):
    folder, scored = served
    center, bureau = folder / "state" / "card_center" / "party.toml", folder / "state" / "bureau" / "party.toml"
    applicant, request = scored["id"].iloc[0], scored["request_id"].iloc[0]
    written = fedscore("audit", "dispute", "--config", center, "--applicant", applicant, "--output",
                       folder / "dispute.json", "--json")
    assert written.returncode == 0, written.stderr
    document = json.loads(written.stdout)
    genesis = document["genesis"][:16]
    assert document["check"] == f"fedscore audit check-evidence {folder / 'dispute.json'} --genesis {genesis}"
    checked = fedscore("audit", "check-evidence", folder / "dispute.json", "--genesis", genesis, "--applicant", applicant)
    assert checked.returncode == 0, checked.stderr
    digest = applicant_digest(applicant).hex()
    assert checked.stdout.startswith(f"ok: applicant {digest} consented to card_center for credit-card-application at ")
    assert f"request {request}" in checked.stdout and "co-signed by bureau, card_center, ecommerce" in checked.stdout
    replica = folder / "state" / "ecommerce" / "jobs" / document["job_id"] / "scoring.sqlite"   # a partner's copy
    again = fedscore("audit", "check-evidence", folder / "dispute.json", "--genesis", genesis, "--replica", replica)
    assert again.returncode == 0 and again.stdout.rstrip().endswith("the block is the replica's at its height")

    mixed = fedscore("audit", "dispute", "--config", center, "--applicant", scored["id"].iloc[1], "--request", request)
    assert mixed.returncode == 2 and "is not applicant" in mixed.stderr   # the chain's salted digest is another's
    partner_desk = fedscore("audit", "dispute", "--config", bureau, "--applicant", applicant)
    assert partner_desk.returncode == 2 and "disputes are opened by the card center" in partner_desk.stderr

    bundle = json.loads((folder / "dispute.json").read_text())   # another applicant's token in it: exit 3, named
    other = fedscore("audit", "dispute", "--config", center, "--applicant", scored["id"].iloc[1], "--output",
                     folder / "other.json", "--quiet")
    assert other.returncode == 0, other.stderr
    bundle["token"] = json.loads((folder / "other.json").read_text())["token"]
    (folder / "forged.json").write_text(json.dumps(bundle))
    failed = fedscore("audit", "check-evidence", folder / "forged.json", "--genesis", genesis)
    assert failed.returncode == 3 and "not the consent digest" in failed.stderr and failed.stdout == ""
    wrong = fedscore("audit", "check-evidence", folder / "dispute.json", "--genesis", "0" * 16, "--json")
    assert wrong.returncode == 3 and json.loads(wrong.stdout)["ok"] is False and "not the expected" in wrong.stderr

    fees = fedscore("audit", "dispute", "--config", center, "--settlement", "1", "--partner", "bureau",
                    "--output", folder / "fees.json", "--json")
    assert fees.returncode == 0, fees.stderr
    settled = json.loads(json.loads((folder / "fees.json").read_text())["settlement_record"]["entry"])
    line = next(line for line in settled["lines"] if line["payee"] == "bureau")
    answered = int((~scored["partners_missing"].str.contains("bureau")).sum())
    assert line["requests"] == answered
    partner = fedscore("audit", "check-evidence", folder / "fees.json", "--genesis", genesis, "--party-config", bureau,
                       "--json")
    assert partner.returncode == 0, partner.stderr
    found = json.loads(partner.stdout)
    assert found["requests"] == answered and found["replica_checked"]
    billed = set(scored[~scored["partners_missing"].str.contains("bureau")]["request_id"])
    assert set(found["request_ids"]) == billed   # exactly the requests the bureau answered, by the card center's answers
    stranger = fedscore("audit", "check-evidence", folder / "fees.json", "--genesis", genesis, "--party-config",
                        folder / "state" / "ecommerce" / "party.toml")
    assert stranger.returncode == 2 and "the bundle bills 'bureau'" in stranger.stderr


def test_the_demo_ends_with_one_dispute_checked(served):
    from fedscore.cli.demo import demo_dispute, dispute_lines

    folder, scored = served
    dispute = demo_dispute(folder, scored)
    lines = dispute_lines(dispute).splitlines()
    assert lines[0].startswith(f"a dispute: applicant {scored['id'].iloc[0]} says they never applied")
    assert lines[2].startswith(f"ok: applicant {applicant_digest(scored['id'].iloc[0]).hex()} consented to card_center")


@pytest.mark.parametrize("arguments, message", [
    ([], "give --applicant (and --request) for a consent dispute, or --settlement"),
    (["--request", "ab" * 16], "--request needs --applicant"),
    (["--settlement", "1"], "needs both --settlement N and --partner NAME"),
    (["--applicant", "7", "--partner", "bureau"], "give --applicant (and --request)"),
])
def test_dispute_refuses_an_unclear_command_before_reading_anything(tmp_path, arguments, message):
    done = fedscore("audit", "dispute", "--config", tmp_path / "absent.toml", *arguments)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.splitlines()) == 1


def test_an_optional_section_is_built_on_the_excerpt_and_checked_by_its_own_check(chain):
    """Where an identity verification goes: a section built from the chain excerpt (here it cites an entry of
    block 4), checked by the check registered for its name; a section nobody can check fails."""
    request = chain.scoring()[5]["request_id"]
    entry = next(e for e in chain.scoring() if e["request_id"] == request)
    bundle = consent_bundle(chain.blocks, request, SECRETS.open_consent(entry["consent"]),
                            applicant_digest(chain.applicants[request]), POLICY,
                            sections={"note": lambda excerpt: {"record": excerpt.record(4, 0)}})
    seen = []

    def check_note(section, anchored, whole):
        seen.append(anchored.entry(section["record"], "the note's entry")["request_id"])
        return "a note checked"

    found = check_consent_bundle(bundle, genesis_of(chain), sections={"note": check_note})
    assert seen == [chain.blocks[4].decoded()[0]["request_id"]] and consent_verdict(found).endswith("; a note checked")
    with pytest.raises(EvidenceError, match="the bundle has a 'note' section this check cannot read"):
        check_consent_bundle(bundle, genesis_of(chain))
    del bundle["chain"]["blocks"]["4"]["signatures"]["host"]   # the section's block is checked like any other
    with pytest.raises(EvidenceError, match="block 4 .* carries no signature from member 'host'"):
        check_consent_bundle(bundle, genesis_of(chain), sections={"note": check_note})


# -- an identity verification in a consent bundle (`--with-verification`) -------------------------

def test_a_consent_bundle_with_the_applicants_verification_checks_it_against_the_files(tmp_path):
    from fedscore.cli.dispute import check_evidence, section_checks
    from fedscore.errors import ConfigError
    from fedscore.protocol.scoring.verification import chain_entry, make_record
    from fedscore.protocol.scoring.verification_evidence import bundle_section

    verifier = SigningKey(bytes([7]) * 32)
    files = {"selfie.jpg": b"a face" * 30, "id-card.jpg": b"an id card" * 20}
    c = Chain()
    now_ms = time.time_ns() // 1_000_000
    c.append([c.request("A-1", now_ms - 5000), c.request("A-2", now_ms - 4000)])
    for applicant, evidence in (("A-1", files), ("A-2", {"other.png": b"someone else"})):
        record = make_record(verifier, "acme-id", applicant, "face-match",
                             {n: hashlib.sha256(d).hexdigest() for n, d in evidence.items()})
        c.append([chain_entry(record, applicant, SECRETS, now_ms - 3000)])
    request = c.scoring()[0]["request_id"]

    def bundle_with(applicant: str) -> dict:
        entry = c.scoring()[0]
        return consent_bundle(c.blocks, request, SECRETS.open_consent(entry["consent"]), applicant_digest("A-1"), POLICY,
                              {"verification": lambda excerpt: bundle_section(excerpt, SECRETS, applicant)})

    bundle = bundle_with("A-1")
    found = check_consent_bundle(bundle, genesis_of(c), "A-1", section_checks(files))
    assert found["sections"][0].startswith("the applicant was verified by acme-id (key ")
    assert "by face-match" in found["sections"][0] and found["sections"][0].endswith("recorded in block 2")
    assert "other.png" not in json.dumps(bundle)          # nothing of the other applicant's verification
    forged = {
        "evidence file 'selfie.jpg' is altered": (bundle, {**files, "selfie.jpg": b"another face"}),
        "evidence file 'id-card.jpg' is missing": (bundle, {"selfie.jpg": files["selfie.jpg"]}),
        "the record is of applicant": (bundle_with("A-2"), {"other.png": b"someone else"}),
        "block 2 .*carries no signature from member 'mirror'": (_without_signature(bundle, "2", "mirror"), files),
    }
    for reason, (forgery, given) in forged.items():
        with pytest.raises(EvidenceError, match=reason):
            check_consent_bundle(forgery, genesis_of(c), "A-1", section_checks(given))
    # through the command's reader: the files come from the folder handed over, and only a bundle with a
    # verification takes --files
    path, folder = tmp_path / "dispute.json", tmp_path / "dispute-evidence"
    path.write_text(json.dumps(bundle))
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    assert check_evidence(path, genesis_of(c), "A-1", files_dir=folder)["ok"]
    (folder / "selfie.jpg").write_bytes(b"swapped")
    with pytest.raises(EvidenceError, match="evidence file 'selfie.jpg' is altered"):
        check_evidence(path, genesis_of(c), "A-1", files_dir=folder)
    with pytest.raises(ConfigError, match="give the folder of the evidence files"):
        check_evidence(path, genesis_of(c), "A-1")


def _without_signature(bundle: dict, height: str, member: str) -> dict:
    forged = json.loads(json.dumps(bundle))
    del forged["chain"]["blocks"][height]["signatures"][member]
    return forged


def test_a_dispute_with_the_applicants_verification_through_the_commands(served, tmp_path):
    """An operator's path: a verifier's key, one verification recorded by the consortium's daemons, then the
    dispute desk's bundle with it and the evidence files handed over, checked offline."""
    folder, scored = served
    applicant = scored["id"].iloc[0]
    key = tmp_path / "acme-id.key"
    made = fedscore("verification", "keygen", "--name", "acme-id", "--out", key, "--json")
    assert made.returncode == 0, made.stderr
    job = folder / "job-verifying.toml"   # beside the data, so --local finds the trained state
    job.write_text(re.sub(r"(?m)^verifiers = .*$",   # instead of the demo's verifier
                          f'verifiers = {{ acme-id = "{json.loads(made.stdout)["public_key"]}" }}',
                          (folder / "job.toml").read_text(), count=1))
    desk = tmp_path / "verifications"
    desk.mkdir()
    (desk / "selfie.jpg").write_bytes(b"a face" * 100)
    recorded = fedscore("verification", "record", "--job", job, "--local", "--applicant", applicant, "--method",
                        "face-match", "--verifier", "acme-id", "--verifier-key", key, "--evidence", desk / "selfie.jpg")
    assert recorded.returncode == 0, recorded.stderr
    center = folder / "state" / "card_center" / "party.toml"
    written = fedscore("audit", "dispute", "--config", center, "--applicant", applicant, "--with-verification", desk,
                       "--output", tmp_path / "dispute.json", "--json")
    assert written.returncode == 0, written.stderr
    document = json.loads(written.stdout)
    handed = tmp_path / "dispute-evidence"
    assert document["evidence_files"] == str(handed) and (handed / "selfie.jpg").read_bytes() == b"a face" * 100
    assert document["check"].endswith(f"--files {handed}")
    genesis = document["genesis"][:16]
    checked = fedscore("audit", "check-evidence", tmp_path / "dispute.json", "--genesis", genesis, "--applicant",
                       applicant, "--files", handed)
    assert checked.returncode == 0, checked.stderr
    assert "; the applicant was verified by acme-id" in checked.stdout and "by face-match" in checked.stdout
    (handed / "selfie.jpg").write_bytes(b"another face")
    altered = fedscore("audit", "check-evidence", tmp_path / "dispute.json", "--genesis", genesis, "--files", handed)
    assert altered.returncode == 3 and "evidence file 'selfie.jpg' is altered" in altered.stderr
    missing = fedscore("audit", "check-evidence", tmp_path / "dispute.json", "--genesis", genesis)
    assert missing.returncode == 2 and "--files" in missing.stderr


def _leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, path + (i,))
    yield path


def _replaced(document, path, value):
    forged = json.loads(json.dumps(document))
    if not path:
        return value
    node = forged
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return forged


@pytest.mark.parametrize("kind", ["consent", "fee"])
def test_a_hand_edited_bundle_fails_as_evidence_never_as_a_crash(chain, kind):
    """Every field of a genuine bundle replaced by a value of the wrong range or type: the check names a failure
    (EvidenceError, exit 3) and never crashes (exit 1) or tries to allocate a block of 10**20 entries."""
    if kind == "consent":
        request = chain.scoring()[5]["request_id"]
        bundle = bundle_of(chain, request)
        check = lambda b: check_consent_bundle(b, genesis_of(chain))   # noqa: E731
    else:
        bundle = fee_bundle(chain.blocks, "mirror", 1, chain.keys["mirror"])
        check = lambda b: check_fee_bundle(b, genesis_of(chain))   # noqa: E731
    check(bundle)
    bad_values = [-1, 10**20, 10**9, "zz", None, [], {}, 1.5, True]
    tried = 0
    for path in set(_leaves(bundle)):
        for value in bad_values:
            forged = _replaced(bundle, path, value)
            try:
                check(forged)
            except EvidenceError:
                pass
            tried += 1
    assert tried > 100
