"""The examples every `fedscore` command and subcommand shows in its help, by command path.

Kept apart from the parser (fedscore.cli.app) because they are the commands' documentation, not their
definition; a test checks that each parser shows its own and that each example parses.
"""
from __future__ import annotations

LEDGER = "fedscore-demo/state/bureau/jobs/JOB_ID/ledger.sqlite"

EXAMPLES: dict[str, list[str]] = {
    "": [
        "fedscore demo",
        "fedscore run examples/default_credit/job.toml --local --report report.json",
        "fedscore init party acme_bureau --dir parties/acme_bureau",
    ],
    "run": [
        "fedscore run examples/default_credit/job.toml --local --report report.json",
        "fedscore run examples/default_credit/job.toml --local --align-only",
        "fedscore run examples/default_credit/job.toml --tls certs/card_center --json --quiet",
    ],
    "status": [
        "fedscore status --job examples/default_credit/job.toml --tls certs/card_center",
        "fedscore status --job examples/default_credit/job.toml --tls certs/bureau --json",
        "fedscore status --observer regulator=127.0.0.1:50090 --tls certs/regulator",
    ],
    "demo": [
        "fedscore demo --workdir fedscore-demo",
        "fedscore demo --epochs 2 --key-bits 1024 --rows 5000 --json",
        "fedscore demo --serve",
    ],
    "serve": [
        "fedscore serve fedscore-demo/job.toml",
        "fedscore serve examples/default_credit/job.toml --http 127.0.0.1:9443 --json",
    ],
    "score": [
        "fedscore score --job fedscore-demo/job.toml --local --input fedscore-demo/applicants.csv --output scored.csv",
        "fedscore score --job examples/default_credit/job.toml --tls certs/card_center --input applicants.csv "
        "--output scored.csv --settle --json",
    ],
    "audit": [f"fedscore audit verify {LEDGER}"],
    "audit verify": [f"fedscore audit verify {LEDGER} --head 3f9c2a7be1d04f5a", f"fedscore audit verify {LEDGER} --quiet"],
    "audit show": [f"fedscore audit show {LEDGER}"],
    "audit prove": [f"fedscore audit prove {LEDGER} 5:0"],
    "audit check-proof": ["fedscore audit check-proof proof.json"],
    "audit balances": [f"fedscore audit balances {LEDGER} --json"],
    "audit dispute": [   # --config: the card center's daemon config, as the demo writes it
        "fedscore audit dispute --config fedscore-demo/state/card_center/party.toml --applicant 20417 "
        "--request 5f0c3b1e9a7d4c2b8e6f1a0d3c5b7e9f",
        "fedscore audit dispute --config fedscore-demo/state/card_center/party.toml --settlement 1 --partner bureau "
        "--output fees.json",
        "fedscore audit dispute --config fedscore-demo/state/card_center/party.toml --applicant 20417 "
        "--with-verification verifications/20417 --output dispute.json",
    ],
    "audit check-evidence": [
        "fedscore audit check-evidence dispute.json --genesis 3f9c2a7be1d04f5a --applicant 20417",
        "fedscore audit check-evidence dispute.json --genesis 3f9c2a7be1d04f5a "
        "--replica fedscore-demo/state/bureau/jobs/JOB_ID/scoring.sqlite",
        "fedscore audit check-evidence fees.json --genesis 3f9c2a7be1d04f5a --party-config parties/bureau/party.toml --json",
        "fedscore audit check-evidence dispute.json --genesis 3f9c2a7be1d04f5a --applicant 20417 --files dispute-evidence",
    ],
    "certs": ["fedscore certs init --consortium consortium-certs --members card_center,bureau,ecommerce"],
    "certs init": [
        "fedscore certs init --consortium consortium-certs --members card_center,bureau,ecommerce",
        "fedscore certs init --consortium consortium-certs --members my_bank --days 365",
    ],
    "coordinator": ["fedscore coordinator serve --config coordinator/coordinator.toml"],
    "coordinator serve": ["fedscore coordinator serve --config coordinator/coordinator.toml"],
    "party": ["fedscore party serve --config parties/bureau/party.toml"],
    "party serve": [
        "fedscore party serve --config parties/bureau/party.toml",
        "fedscore party serve --config parties/bureau/party.toml --listen 0.0.0.0:50062",
    ],
    "verification": ["fedscore verification keygen --name acme-id --out acme-id.key"],
    "verification keygen": ["fedscore verification keygen --name acme-id --out acme-id.key"],
    "verification record": [
        "fedscore verification record --job fedscore-demo/job.toml --local --applicant 31337 --method face-match "
        "--verifier acme-id --verifier-key acme-id.key --evidence selfie.jpg id-card.jpg",
        "fedscore verification record --job examples/default_credit/job.toml --tls certs/card_center "
        "--applicant 31337 --method bank-account --verifier acme-id --verifier-key acme-id.key --evidence "
        "transfer.pdf --json",
    ],
    "monitor": [
        "fedscore monitor --job fedscore-demo/job.toml",
        "fedscore monitor --job fedscore-demo/job.toml --since 2026-01-01 --html monitor.html",
        "fedscore monitor --job examples/default_credit/job.toml --state /var/lib/fedscore/card_center --per 1000 --json",
    ],
    "observer": ["fedscore observer serve --config regulator/observer.toml"],
    "observer serve": [
        "fedscore observer serve --config regulator/observer.toml",
        "fedscore observer serve --config regulator/observer.toml --listen 0.0.0.0:50090",
    ],
    "init observer": [
        "fedscore init observer regulator --dir regulator --member coordinator=10.0.0.1:50051 "
        "--member bank=10.0.0.2:50061",
    ],
    "init": ["fedscore init party acme_bureau --dir parties/acme_bureau"],
    "init party": [
        "fedscore init party acme_bureau --dir parties/acme_bureau",
        "fedscore init party my_bank --role card_center --listen 127.0.0.1:50071 --tls-dir consortium-certs/my_bank",
    ],
    "audience": [
        "fedscore audience query --job audience-job.toml --tls certs/card_center --model 5f0c… --min-points 620 "
        "--segment preference --epsilon 0.5",
    ],
    "audience handover": ["fedscore audience handover --job audience-job.toml --tls certs/card_center"],
    "audience query": [
        "fedscore audience query --job audience-job.toml --tls certs/card_center --model 5f0c… --min-points 620 "
        "--segment preference --epsilon 0.5",
        "fedscore audience query --job audience-job.toml --insecure --model 5f0c… --min-points 640 --json",
    ],
    "audience campaign": [
        "fedscore audience campaign --job audience-job.toml --tls certs/card_center --query q3b1…",
    ],
    "audience conversion": [
        "fedscore audience conversion --job audience-job.toml --tls certs/card_center --campaign c9d2… --applicant 31337",
    ],
    "audience settle": ["fedscore audience settle --job audience-job.toml --tls certs/card_center --json"],
}
