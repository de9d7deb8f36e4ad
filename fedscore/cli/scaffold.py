"""`fedscore init party NAME`: a new party's folder, ready to edit and serve.

The folder holds a daemon config that `fedscore party serve --config` takes
as it is once the party's TLS identity is in place (``--tls-dir`` points the
config at one made by `fedscore certs init`; by default it is expected in
``tls/``), an empty state folder, and a data folder with a stub CSV in the
shape a job expects of this role, with a README on the columns and on how
ids are matched. Missing parent folders are made; the folder itself is
written in a hidden folder beside the target and renamed into place, so a
failure leaves nothing half made, and an existing folder is never written
into.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Literal

from fedscore.daemons.config import DaemonConfig
from fedscore.job import NAME_PATTERN
from fedscore.errors import ConfigError

Role = Literal["card_center", "partner"]
ROLES: tuple[Role, ...] = ("card_center", "partner")
DEFAULT_LISTEN = "127.0.0.1:50061"
DEFAULT_TLS_DIR = "tls"
LABEL = "y"
ROLE_TEXT = {"card_center": "the card center, which holds the labels", "partner": "a partner"}

CONFIG_HEAD = """\
# The {name} party daemon ({role_text}). Start it with:
#   fedscore party serve --config {config_hint}
[party]
"""

CONFIG_COMMENT = 32   # the column the settings' comments start at

CONFIG_TAIL = """\
# Scoring new applicants (see the README's "Scoring new applicants"):
# consent_issuers = ["<64 hex digits: the Ed25519 key of an identity provider you trust>"]
# consent_max_age_days = 30
# consent_max_uses = 3
# Observers (a regulator's replica) that may read this party's chains and nothing else (docs/observer.md):
# observers = ["regulator"]
"""


def config_text(name: str, role: "Role", listen: str, config_hint: str, tls_dir: str,
                card_centers: tuple[str, ...] = ()) -> str:
    """The party.toml: every setting a party needs, each with a comment on what it is for."""
    centers = "[" + ", ".join(json.dumps(c) for c in card_centers) + "]"
    settings = [
        (f'name = "{name}"', "the name the job file gives this party"),
        (f'listen = "{listen}"', "host:port the other members reach this daemon on (mutual TLS)"),
        (f"tls_dir = {json.dumps(tls_dir)}", "this member's cert.pem, key.pem, ca.pem from `fedscore certs init`"),
        ('state_dir = "state"', "models, ledger replicas, signing key; relative to this file"),
        ('data_dir = "data"', "jobs may only read files inside this folder"),
        (f"workers = {DaemonConfig.workers}", "processes for Paillier work; 0 = every core"),
        (f"min_key_bits = {DaemonConfig.min_key_bits}", "refuse jobs with smaller Paillier keys"),
        (f"min_batch_rows = {DaemonConfig.min_batch_rows}", "refuse jobs whose steps cover fewer applicants"),
        (f"max_message_mib = {DaemonConfig.max_message_mib}", "the largest message this daemon accepts"),
        (f"card_centers = {centers}", 'members whose jobs it takes as partner; none named, none taken: e.g. ["bank"]'),
        (f"max_jobs = {DaemonConfig.max_jobs}", "jobs over its rows it takes from each card center ..."),
        (f"window_days = {DaemonConfig.window_days}", "... in any window of this many days"),
        (f"max_set_ratio = {DaemonConfig.max_set_ratio}", "a card center's ids in alignment: at most this times its own"),
    ]
    role_text = ROLE_TEXT[role]
    lines = [f"{setting:<{CONFIG_COMMENT - 1}} # {comment}" for setting, comment in settings]
    return (
        CONFIG_HEAD.format(name=name, role_text=role_text, config_hint=config_hint) + "\n".join(lines) + "\n"
        + CONFIG_TAIL + (CARD_CENTER_LINES if role == "card_center" else PARTNER_LINES)
    )


CARD_CENTER_LINES = """\
# http_listen = "127.0.0.1:8080"   # the card center's HTTP/JSON scoring endpoint
"""

PARTNER_LINES = """\
# scoring_database = "data/customers.sqlite"   # look applicants up here rather than in the job's CSV
# scoring_table = "applicants"
# scoring_id = "id"
"""

DATA_README = """\
# Data for {name}

`{csv}` is a stub: replace its example rows with this party's own, keeping
the shape. A job names the file (`data = "{csv}"` in its `[[parties]]`
entry); the daemon opens only files inside this folder.

## Columns

- `id`: the applicant's id, as the other parties also hold it (a national
  id, a phone number, a customer number agreed between the parties). The
  column may have another name, or there may be several id columns (for
  instance `phone` and `national_id`): the job file's `id` says which.
{label_line}- every other column is a feature: numbers only, none missing. This party
  standardises its own columns on its own training rows; nobody else sees
  them.

## How ids are matched

Every party applies the same rule before private set intersection: each id
column is read as text, surrounding whitespace is stripped, and the text is
case-folded. So ` 123`, `123` and `"123"` are one id, `AB12` and `ab12` are
one id, but `0123` and `123` are two: keep leading zeros the way the other
parties keep them. With several id columns, the values are joined in the
order the job lists them. An empty id, or one repeated within this file,
stops the job with an error naming the lines (never the ids).

Only applicants held by every party train. No id leaves this machine in
clear: the parties compare blinded ids, and errors name lines, not values.
"""

LABEL_LINE = """\
- `y`: the label, 1 if the applicant defaulted and 0 if not. Only the card
  center holds a label; both values must occur.
"""

README = """\
# Party {name} ({role_text})

Made by `fedscore init party`. Next steps:

1. Put this party's data in `data/` in the shape of `data/{csv}`
   (`data/README.md` explains the columns and how ids are matched).
2. Check `party.toml`: `listen` is the address the coordinator{reach} will
   reach. {tls_step}
3. Start the daemon and leave it running:

       fedscore party serve --config {config_hint}

4. Send the job's owner this party's entry for the job file:

       [[parties]]
       name = "{name}"
       data = "{csv}"
       id = "id"
{label_toml}       address = "{listen}"

{scoring_step}"""

SCORING_STEP = {
    "card_center": (
        "5. To score new applicants online, set `http_listen` and `consent_issuers`\n"
        "   in `party.toml`, then run `fedscore score` against a trained job.\n"
    ),
    "partner": (
        "5. To answer scoring requests, set `consent_issuers` in `party.toml`; to find\n"
        "   customers added after training, point `scoring_database` at a SQLite file.\n"
    ),
}

STUB_ROWS = {
    "card_center": ["id,feature_1,feature_2,y", "1001,0.5,12,0", "1002,1.5,7,1", "1003,-0.25,30,0", "1004,2.0,18,1"],
    "partner": ["id,feature_1,feature_2", "1001,3.2,0", "1002,0.0,1", "1003,1.1,4", "1004,7.5,2"],
}


def init_party(name: str, folder: Path, role: Role = "partner", listen: str = DEFAULT_LISTEN,
               tls_dir: Path | None = None, card_centers: tuple[str, ...] = ()) -> list[Path]:
    """Write a new party folder at ``folder``; returns the files written. Refuses an existing, non-empty folder.

    ``tls_dir``: this party's member folder from `fedscore certs init`; without it the config expects ``tls/``.
    ``card_centers``: the members whose jobs it takes as partner (none: it takes none until its config names some).
    """
    for party in (name, *card_centers):
        if not NAME_PATTERN.fullmatch(party):
            raise ConfigError(f"party name {party!r}: use a letter, then letters, digits, '-' and '_' (at most 64)")
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: use card_center or partner")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists; refusing to overwrite it (choose another --dir, or remove it)")
    if tls_dir is not None and not (tls_dir / "cert.pem").is_file():
        raise ConfigError(f"--tls-dir {tls_dir}: no cert.pem there; make the member folder with `fedscore certs init`")
    parent = folder.resolve().parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"cannot create {folder}: {folder.parent} is a file, not a folder")
    parent.mkdir(parents=True, exist_ok=True)   # parties/acme_bureau in a fresh checkout: parties/ is made too
    tls_setting = str(tls_dir.resolve()) if tls_dir is not None else DEFAULT_TLS_DIR
    tls_step = (
        f"Its TLS identity is `{tls_setting}`." if tls_dir is not None else
        f"Its TLS identity goes in `{DEFAULT_TLS_DIR}/`: ask whoever keeps the\n   consortium's CA to run "
        f"`fedscore certs init --consortium DIR --members {name}`\n   and copy the folder `DIR/{name}` there "
        "(`key.pem` stays readable by you alone)."
    )
    csv = f"{name}.csv"
    role_text = ROLE_TEXT[role]
    config_hint = str(folder / "party.toml")
    files = {
        Path("party.toml"): config_text(name, role, listen, config_hint, tls_setting, tuple(card_centers)),
        Path("data") / csv: "\n".join(STUB_ROWS[role]) + "\n",
        Path("data") / "README.md": DATA_README.format(
            name=name, csv=csv, label_line=LABEL_LINE if role == "card_center" else ""
        ),
        Path("README.md"): README.format(
            name=name, role_text=role_text, csv=csv, listen=listen, config_hint=config_hint,
            reach="" if role == "card_center" else " and the card center", tls_step=tls_step,
            label_toml=f'       label = "{LABEL}"\n' if role == "card_center" else "",
            scoring_step=SCORING_STEP[role],
        ),
    }
    staging = parent / f".{folder.name}.init-{secrets.token_hex(4)}"
    try:
        staging.mkdir()
        (staging / "state").mkdir()
        (staging / "data").mkdir()
        for relative, text in files.items():
            (staging / relative).write_text(text)
        if folder.exists():
            folder.rmdir()           # empty (checked above): rename needs it gone or empty
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [folder / relative for relative in files] + [folder / "state"]
