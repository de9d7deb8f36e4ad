"""The `fedscore` command as a user runs it: exit codes, one-line errors, help with examples."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import breast_parties, write_job


def fedscore(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fedscore", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_run_local_writes_report_and_prints_epochs(breast_folder):
    job = write_job(breast_folder, breast_parties(), epochs=2)
    done = fedscore("run", job, "--local", "--report", breast_folder / "out.json")
    assert done.returncode == 0, done.stderr
    assert "epoch 1/2" in done.stdout and "epoch 2/2" in done.stdout
    report = json.loads((breast_folder / "out.json").read_text())
    assert report["epochs"] == 2 and report["parties"][0]["name"] == "guest"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda parties: parties[1].update(label="y"), "exactly one party must carry the label; 2 do (guest, host)"),
        (lambda parties: parties[0].update(id="customer"), "party 'guest': breast_hetero_guest.csv: id column 'customer' not found"),
    ],
)
def test_user_errors_exit_2_with_one_line(breast_folder, change, message):
    parties = breast_parties()
    change(parties)
    done = fedscore("run", write_job(breast_folder, parties), "--local", "--report", breast_folder / "out.json")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedscore: error: ")
    assert message in lines[0]
    assert not (breast_folder / "out.json").exists()


def test_run_without_addresses_asks_for_local(breast_folder):
    done = fedscore("run", write_job(breast_folder, breast_parties()))
    assert done.returncode == 2
    assert "no address for the coordinator; add it, or use --local" in done.stderr


@pytest.mark.parametrize("command", [["run"], ["demo"], ["party", "serve"], ["coordinator", "serve"]])
def test_help_shows_an_example(command):
    done = fedscore(*command, "--help")
    assert done.returncode == 0 and "example: fedscore" in done.stdout
