"""Marketing audiences through real daemons: a labels-only card center and a partner train an audience model,
the card center hands its part over, queries noisy counts, starts a campaign, records a conversion and settles,
every act co-signed on the pair's audience chain; each protection refuses its attack; and no user id or
feature value of the partner crosses the wire (TCP proxies record every byte between the daemons)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fedscore.cli import main
from fedscore.cli.runner import submit
from fedscore.daemons.launcher import LocalConsortium
from fedscore.errors import FedscoreError, PeerError
from fedscore.job_file import ScoringSettings, load_job
from fedscore.ledger.block import decode_entry
from fedscore.ledger.settlement import balances
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import verify_chain
from fedscore.protocol.audience.model import AudienceModel
from fedscore.protocol.audience.users import load_user_base
from fedscore.protocol.scoring.scorecard import ScoringPolicy
from fedscore.transport.clients.audience import AudienceClient, AudiencePeer

from conftest import write_job
from faults import attack
from test_wire_privacy import Proxy, leaks, messages

FEES = {"per_query": 2000, "per_audience_member": 5, "per_conversion": 3000}
POLICY = {"users": "shop_users.csv", "id_column": "id", "segments": ["channel"], "min_cell": 20, "budget": 3.0,
          "window_days": 30, "max_epsilon": 1.0}
NOISE_SLACK = 20   # discrete Laplace at ε ≥ 0.5: P(|noise| > 20) = 2e^{-10}/(1+e^{-0.5}) < 6e-5 per cell


def audience_data(folder, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """A card center with ids and labels only; a shop with three columns that predict the label, for 600 of the
    card center's people and 400 it never saw; its users file adds a channel (exposed, one rare value) and a
    region (not exposed)."""
    people = [f"user-{rng.integers(16**10):010x}" for _ in range(1200)]
    risk = rng.normal(0, 1, len(people))
    label = (risk + rng.normal(0, 0.7, len(people)) > 0.6).astype(int)
    center = pd.DataFrame({"id": people[:800], "y": label[:800]})
    held = list(range(200, 1200))   # 600 shared with the card center, 400 strangers
    shop = pd.DataFrame({"id": [people[i] for i in held]})
    for j, scale in enumerate((30.0, -20.0, 12.0)):
        # six decimals and a tail: values that cannot turn up on the wire by chance (as in test_wire_privacy)
        shop[f"spend_{j}"] = (np.round(100 + scale * risk[held] + rng.normal(0, 15, len(held)), 6)
                              + 1e-6 * rng.integers(1, 999, len(held)))
    users = shop.copy()
    users["channel"] = rng.choice(["app", "web", "store", "kiosk"], size=len(held), p=[0.5, 0.3, 0.19, 0.01])
    users["region"] = rng.choice(["north", "south"], size=len(held))
    center.to_csv(folder / "center.csv", index=False)
    shop.to_csv(folder / "shop.csv", index=False)
    users.to_csv(folder / "shop_users.csv", index=False)
    return {"center": center, "shop": shop, "users": users}


def once_reachable(call, within: float = 60.0):
    """``call()`` once the peer it reaches is reachable again: a channel that saw it down retries on a backoff."""
    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except PeerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def chain_entries(path) -> list[dict]:
    store = LedgerStore(path, read_only=True)
    try:
        blocks = list(store.blocks())
    finally:
        store.close()
    verify_chain(blocks, workers=1)
    return [decode_entry(e) for block in blocks for e in block.entries]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """The whole story once, through proxies; the tests read what it kept."""
    folder = tmp_path_factory.mktemp("audience")
    frames = audience_data(folder, np.random.default_rng(5))
    parties = [{"name": "center", "data": "center.csv", "id": "id", "label": "y"},
               {"name": "shop", "data": "shop.csv", "id": "id"}]
    settings = dict(epochs=8, learning_rate=0.5, validation=0.2, min_overlap=50, binning={"max_bins": 5})
    fees = "\n[fees]\n" + "".join(f"{k} = {v}\n" for k, v in FEES.items())
    job = write_job(folder, parties, **settings)
    job.write_text(job.read_text() + fees)
    spec, base = load_job(job)
    done: dict = {"frames": frames, "folder": folder, "refusals": {}}
    # plaintext on purpose: the proxies read what each message carries, which TLS would hide from them
    with LocalConsortium(spec, base, folder / "state", 1, insecure=True, audience={"shop": POLICY}) as consortium:
        proxies = {p.name: Proxy(p.address) for p in consortium.spec.parties}
        watched = replace(consortium.spec, parties=tuple(replace(p, address=proxies[p.name].address)
                                                         for p in consortium.spec.parties))
        done["report"] = submit(watched, consortium.coordinator_address, lambda event: None)
        # the card center's marketing system is inside its boundary: it calls its own daemon directly
        client = AudienceClient(consortium.spec.card_center.address, "center")
        try:
            handed, reply = client.handover(watched, "", "")
            chain_id = reply.chain_id
            done["handover"] = handed
            model_file = folder / "state" / "shop" / "audience" / "center" / "models" / f"{handed['model']}.json"
            model = AudienceModel.from_json(model_file.read_text())
            users = load_user_base(folder / "shop_users.csv", "id", list(model.partner_model.features), ["channel"], "shop")
            points = model.points(users)
            done.update(model=model, users=users, points=points)
            cut = float(np.quantile(points, 0.4))
            done["cut"] = cut
            done["first"], _ = client.query(watched, {"model": handed["model"], "min_points": cut,
                                                      "segments": ["channel"], "epsilon": 1.0})
            # differencing: a cut-off just above the first, so that only a few users drop out of one cell
            above = np.sort(points[points >= cut])
            nearby = float(above[3]) if above[3] > above[0] else float(above[above > above[0]][0])
            done["nearby"] = nearby

            def refused(name: str, call) -> None:
                try:
                    call()
                except FedscoreError as error:
                    done["refusals"][name] = str(error)

            def query(min_points: float, segments: list[str], epsilon: float, model: str = handed["model"],
                      unseen_only: bool = False):
                return lambda: client.query(watched, {"model": model, "min_points": min_points, "segments": segments,
                                                      "epsilon": epsilon, "unseen_only": unseen_only})

            refused("differencing", query(nearby, ["channel"], 0.5))
            refused("unexposed", query(cut, ["region"], 0.5))
            refused("unknown model at the card center", query(cut, [], 0.5, model="0" * 64))
            partner = AudiencePeer("shop", proxies["shop"].address, chain_id, "center")
            try:   # a card center that skips its own check: the partner holds no such model either
                refused("unknown model at the partner", lambda: partner.answer_query(
                    {"query_id": "q" + "1" * 31, "model": "0" * 64, "min_points": cut, "segments": [], "epsilon": 0.5,
                     "unseen_only": False}))
            finally:
                partner.close()
            # a card center that asks the partner directly and never records the answer: the partner answers no
            # new query until it is on the chain, and the card center's next act records it first
            partner = AudiencePeer("shop", proxies["shop"].address, chain_id, "center")
            try:
                done["skipped"], _ = partner.answer_query({"query_id": "q" + "2" * 31, "model": handed["model"],
                                                           "min_points": float(np.quantile(points, 0.5)),
                                                           "segments": [], "epsilon": 0.5, "unseen_only": False})
                refused("unrecorded", lambda: partner.answer_query({
                    "query_id": "q" + "3" * 31, "model": handed["model"], "min_points": float(np.quantile(points, 0.8)),
                    "segments": [], "epsilon": 0.5, "unseen_only": False}))
            finally:
                partner.close()
            done["second_cut"] = float(np.quantile(points, 0.7))
            done["second"], _ = query(done["second_cut"], [], 1.0, unseen_only=True)()
            refused("budget", query(float(np.quantile(points, 0.1)), [], 0.6))
            done["campaign"], _ = client.campaign(watched, done["first"]["query_id"])
            # the partner dies: the conversion fails, naming it; once it is back (its replica and records come back
            # from its state) the conversion goes on the chain, and the same one reported again is not billed twice
            os.killpg(consortium.processes["shop"].pid, signal.SIGKILL)
            consortium.processes["shop"].wait()
            applicant = frames["center"]["id"][7]
            refused("partner down", lambda: client.conversion(watched, done["campaign"]["campaign_id"], applicant))
            consortium.restart("shop")   # serving again; the card center's channel reconnects on its own backoff
            done["conversion"], _ = once_reachable(lambda: client.conversion(watched, done["campaign"]["campaign_id"],
                                                                             applicant))
            done["conversion_again"], _ = client.conversion(watched, done["campaign"]["campaign_id"], applicant)
            # a second part for the same job (another scale) would shift cut-offs past the gap rule: refused
            refused("second part", lambda: client.handover(
                watched, "", ScoringSettings(policy=ScoringPolicy(offset=601.0)).to_json()))
            # the analyst's command settles: `fedscore audience settle` against the running daemons, its job file
            # naming where they listen (the partner behind its proxy)
            (folder / "cli").mkdir()
            for name in ("center.csv", "shop.csv"):
                (folder / "cli" / name).write_bytes((folder / name).read_bytes())
            addresses = {"center": consortium.spec.card_center.address, "shop": proxies["shop"].address}
            cli_job = write_job(folder / "cli", [{**p, "address": addresses[p["name"]]} for p in parties], **settings)
            cli_job.write_text(cli_job.read_text() + fees)
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                assert main(["audience", "settle", "--job", str(cli_job), "--insecure", "--json"]) == 0
            done["settlement"] = json.loads(printed.getvalue())
        finally:
            client.close()
            for proxy in proxies.values():
                proxy.close()
    done["traffic"] = [m for proxy in proxies.values() for pair in proxy.captured for direction in pair
                       for m in messages(bytes(direction))]
    return done


def true_counts(done: dict, cut: float) -> dict[str, int]:
    inside = done["points"] >= cut
    channels = done["users"].segments["channel"]
    return {value: int(np.sum(inside & (channels == value))) for value in sorted(set(channels.tolist()))}


def test_the_counts_are_the_partners_plaintext_counts_within_the_noise_and_small_cells_are_suppressed(campaign):
    answer = campaign["first"]
    truth = true_counts(campaign, campaign["cut"])
    cells = {tuple(cell["segment"]): cell["count"] for cell in answer["cells"]}
    assert set(cells) == {(value,) for value in truth}   # every value of the column, even an empty cell
    for (value,), count in cells.items():
        if count is None:
            assert truth[value] < POLICY["min_cell"] + NOISE_SLACK
        else:
            assert abs(count - truth[value]) <= NOISE_SLACK and count >= POLICY["min_cell"]
    assert cells[("kiosk",)] is None                     # about a dozen users: always "< 20"
    assert cells[("app",)] is not None and truth["app"] > 100
    # most of the audience are people the card center never saw: the model counted them too
    strangers = ~np.isin(campaign["users"].ids, campaign["frames"]["center"]["id"].to_numpy())
    assert np.sum(strangers & (campaign["points"] >= campaign["cut"])) > 100
    assert answer["epsilon"] == 1.0 and answer["spent"] == 1.0 and answer["budget"] == 3.0


def test_an_unseen_only_query_counts_only_the_users_the_card_center_never_saw(campaign):
    answer = campaign["second"]
    strangers = ~np.isin(campaign["users"].ids, campaign["frames"]["center"]["id"].to_numpy())
    # every user the partner aligned with the card center in the job is one the card center holds
    truth = int(np.sum(strangers & (campaign["points"] >= campaign["second_cut"])))
    assert [cell["segment"] for cell in answer["cells"]] == [[]] and truth > 50
    assert abs(answer["total"] - truth) <= NOISE_SLACK
    everyone = int(np.sum(campaign["points"] >= campaign["second_cut"]))
    assert everyone - truth > 3 * NOISE_SLACK   # without the flag the count would be clearly larger


def test_each_protection_refuses_its_query(campaign):
    refusals = campaign["refusals"]
    first = campaign["first"]["query_id"]
    assert not attack("differencing" not in refusals)
    assert first in refusals["differencing"]
    assert not attack("unexposed" not in refusals)
    assert "region" in refusals["unexposed"]
    assert "0" * 64 in refusals["unknown model at the card center"]
    assert not attack("unknown model at the partner" not in refusals)
    assert "0" * 64 in refusals["unknown model at the partner"]
    assert not attack("budget" not in refusals)
    assert "budget" in refusals["budget"]
    assert "partner 'shop'" in refusals["partner down"]
    assert campaign["conversion_again"]["conversion_id"] == campaign["conversion"]["conversion_id"]
    assert not attack("second part" not in refusals)
    assert "one part per job" in refusals["second part"]
    assert not attack("unrecorded" not in refusals)
    assert "q" + "2" * 31 in refusals["unrecorded"]


def test_the_campaign_file_holds_exactly_the_audience_and_stays_at_the_partner(campaign):
    campaign_id = campaign["campaign"]["campaign_id"]
    path = campaign["folder"] / "state" / "shop" / "audience" / "center" / "campaigns" / f"{campaign_id}.csv"
    kept = set(pd.read_csv(path, dtype=str)["id"])
    expected = set(campaign["users"].ids[campaign["points"] >= campaign["cut"]].tolist())
    assert kept == expected
    assert os.stat(path).st_mode & 0o077 == 0
    assert campaign["campaign"]["members"] == campaign["first"]["total"]   # billed: the noisy total, not the truth


def test_the_settlement_is_on_both_replicas_and_adds_up(campaign):
    folder = campaign["folder"] / "state"
    center = chain_entries(folder / "center" / "audience" / "shop" / "audience.sqlite")
    shop = chain_entries(folder / "shop" / "audience" / "center" / "audience.sqlite")
    assert center == shop
    kinds = [e["kind"] for e in center]
    assert kinds == ["audience_start", "audience_model", "audience_query", "audience_query", "audience_query",
                     "campaign", "conversion", "audience_settlement"]   # no refused query on the chain
    # the answer the card center did not record itself went on the chain before its next query
    assert [e["query"]["query_id"] for e in center if e["kind"] == "audience_query"][1] == "q" + "2" * 31
    line = campaign["settlement"]["lines"][0]
    members = campaign["first"]["total"]
    assert line == {"payee": "shop", "queries": 3, "audience_members": members, "conversions": 1,
                    "amount": 3 * FEES["per_query"] + members * FEES["per_audience_member"] + FEES["per_conversion"]}
    assert balances(center)["center"]["owes"] == line["amount"]
    assert set(center[-1]["signatures"]) == {"center", "shop"}
    spent = [e["spent"] for e in center if e["kind"] == "audience_query"]
    assert spent == [1.0, 1.5, 2.5]


def test_no_user_id_or_feature_value_of_the_partner_crosses_the_wire(campaign):
    traffic = campaign["traffic"]
    assert sum(len(m) for m in traffic) > 100_000   # training and the audience calls went through the proxies
    users = campaign["frames"]["users"][["id", "spend_0", "spend_1", "spend_2"]]
    needles, found = leaks(traffic, users)
    assert needles > 3000
    assert not attack(bool(found)), found[:5]
    needles, found = leaks(traffic, campaign["frames"]["center"], "y")
    assert found == []
