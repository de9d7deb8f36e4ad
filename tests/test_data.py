"""A party's CSV: every kind of bad file gets one clear error naming file, column and line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faults import count

from fedscore.errors import DataError
from fedscore.model.data import load_party_table

GOOD = "id,y,a,b\n3,1,0.5,10\n1,0,1.5,20\n2,1,2.5,30\n"


def write(tmp_path: Path, text: str | bytes, name: str = "party.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def load(path: Path, label: str | None = "y", ids=("id",)):
    return load_party_table(path, list(ids), label, party="bank")


def test_good_file_is_sorted_by_normalised_id(tmp_path):
    table = load(write(tmp_path, GOOD))
    assert table.ids.tolist() == ["1", "2", "3"]
    assert table.feature_names == ["a", "b"]
    assert table.labels.tolist() == [0, 1, 1]
    np.testing.assert_allclose(table.features, [[1.5, 20], [2.5, 30], [0.5, 10]])


def test_id_rule_strips_and_casefolds_and_joins_columns(tmp_path):
    one = load(write(tmp_path, "phone,nid,x\n 555 ,AB12,1\n556,cd34,2\n", "one.csv"), None, ("phone", "nid"))
    two = load(write(tmp_path, "nid,phone,x\nCD34,556,5\nab12,555,6\n", "two.csv"), None, ("phone", "nid"))
    assert one.ids.tolist() == two.ids.tolist() == ["555\x1fab12", "556\x1fcd34"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "file is empty"),
        ("id,y,a\n", "has a header but no rows"),
        ("id,y,a\n1,0,2\n2,1\n", "line 3 has 2 fields, the header has 3"),
        ("id,y,a,a\n1,0,2,3\n", "column 'a' appears twice"),
        ("id,y,y,a\n1,0,1,3\n", "column 'y' appears twice"),
        ("key,y,a\n1,0,2\n", "id column 'id' not found"),
        ("id,a\n1,2\n", "label column 'y' not found"),
        ("id,y,a\n1,0,2\n1,1,3\n", "2 rows share an id with another row (first at lines 2 and 3)"),
        ("id,y,a\n1,0,2\n ,1,3\n", "id column 'id' is empty on 1 row (first at line 3)"),
        ("id,y,a\n1,0,2\n2,1,abc\n", "column 'a' is not numeric on 1 row (first at line 3)"),
        ("id,y,a\n1,0,2\n2,1,\n", "column 'a' has 1 missing or infinite value (first at line 3)"),
        ("id,y,a\n1,0,NaN\n2,1,3\n", "column 'a' has 1 missing or infinite value (first at line 2)"),
        ("id,y,a\n1,0,inf\n2,1,3\n", "column 'a' has 1 missing or infinite value"),
        ("id,y,a\n1,0,1\n2,2,3\n", "label column 'y' must hold 0 or 1; 1 row does not (first at line 3)"),
        ("id,y,a\n1,1,1\n2,1,3\n", "holds only 1s"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, fragment):
    with pytest.raises(DataError) as caught:
        load(write(tmp_path, text))
    message = str(caught.value)
    assert fragment in message
    assert message.startswith(f"party 'bank': {tmp_path / 'party.csv'}:")   # the file as given
    assert "\n" not in message
    count("bad files tried")


def test_a_partner_file_without_features_is_refused_and_a_card_centers_labels_alone_are_taken(tmp_path):
    """A partner brings columns or nothing; a card center may bring its labels only (an audience model's job)."""
    with pytest.raises(DataError, match="no feature columns besides the id and label columns"):
        load(write(tmp_path, "id\n1\n2\n", "partner.csv"), label=None)
    table = load(write(tmp_path, "id,y\n1,0\n2,1\n"))
    assert table.feature_names == [] and table.features.shape == (2, 0) and table.labels.tolist() == [0, 1]
    count("bad files tried")


def test_errors_never_quote_raw_values_or_ids(tmp_path):
    with pytest.raises(DataError) as caught:
        load(write(tmp_path, "id,y,a\nsecret-id-77,0,hidden-value\n"))
    assert "secret-id-77" not in str(caught.value) and "hidden-value" not in str(caught.value)
    with pytest.raises(DataError) as caught:
        load(write(tmp_path, "id,y,a\nsecret-id-77,0,1\nsecret-id-77,1,2\n"))
    assert "secret-id-77" not in str(caught.value)


def test_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(DataError, match="file does not exist"):
        load(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="line 2 is not UTF-8 text"):
        load(write(tmp_path, b"id,y,a\n1,0,\xff\xfe\n"))
    count("bad files tried", 2)


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_file_separated_by_semicolons_tabs_or_pipes_reads_as_its_comma_twin(tmp_path, delimiter):
    twin = load(write(tmp_path, GOOD.replace(",", delimiter), "other.csv"))
    table = load(write(tmp_path, GOOD))
    assert twin.ids.tolist() == table.ids.tolist() and twin.feature_names == table.feature_names == ["a", "b"]
    np.testing.assert_array_equal(twin.features, table.features)
    assert twin.labels.tolist() == table.labels.tolist()


def test_a_column_not_found_names_the_delimiter_and_the_columns_read(tmp_path):
    with pytest.raises(DataError) as caught:
        load(write(tmp_path, "key;y;a;b\n1;0;2;3\n"))
    assert str(caught.value) == (
        f"party 'bank': {tmp_path / 'party.csv'}: id column 'id' not found "
        "(read as semicolon-separated, the header has 4 columns: 'key', 'y', 'a', 'b')"
    )
    wide = ",".join(["key", "y", *(f"x{i}" for i in range(20))])
    with pytest.raises(DataError, match=r"comma-separated, the header has 22 columns: 'key', 'y', 'x0', .*'x5', \.\.\. \(22 in all\)\)$"):
        load(write(tmp_path, wide + "\n" + ",".join("1" * 22) + "\n"))
    with pytest.raises(DataError, match="the header has 1 column: 'id:y:a'"):
        load(write(tmp_path, "id:y:a\n1:0:2\n"))


def test_a_decimal_comma_in_a_semicolon_file_is_refused_not_read_as_text(tmp_path):
    path = write(tmp_path, "id;y;a;b\n1;0;1,5;10\n2;1;2;20\n")
    for lenient in (False, True):
        with pytest.raises(DataError, match="column 'a' writes numbers with a decimal comma on 1 rows .first at line 2."):
            load_party_table(path, ["id"], "y", party="bank", lenient=lenient)


def test_a_ragged_row_in_a_semicolon_file_names_how_it_was_read(tmp_path):
    with pytest.raises(DataError, match="line 3 has 2 fields, the header has 3 .read as semicolon-separated.$"):
        load(write(tmp_path, "id;y;a\n1;0;2\n2;1\n"))


def test_partner_file_without_label(tmp_path):
    table = load(write(tmp_path, "id,a\n2,1\n1,2\n"), label=None)
    assert table.labels is None and table.ids.tolist() == ["1", "2"]


def test_a_dataframe_gives_the_table_its_csv_gives(tmp_path):
    import pandas as pd

    from fedscore.model.data import table_from_frame

    text = "phone,nid,y,a,b\n 555 ,AB12,1,0.5,10\n556,cd34,0,1.5,2e3\n554,x,1,-3,0.1\n"
    from_file = load(write(tmp_path, text), "y", ("phone", "nid"))
    frame = pd.read_csv(write(tmp_path, text, "again.csv"))   # phone parsed as text here, b as floats
    for given in (frame, frame.set_index(["phone", "nid"])):   # ids as columns, or as the index
        from_frame = table_from_frame(given, ["phone", "nid"], "y", party="bank")
        assert from_frame.ids.tolist() == from_file.ids.tolist()
        assert from_frame.feature_names == from_file.feature_names == ["a", "b"]
        assert from_frame.labels.tolist() == from_file.labels.tolist()
        np.testing.assert_array_equal(from_frame.features, from_file.features)
    numbers = pd.DataFrame({"id": [3, 1, 2], "y": [1.0, 0.0, 1.0], "a": ["0.5", "1.5", "2.5"], "b": [10, 20, 30]})
    table = table_from_frame(numbers, ["id"], "y")            # integer ids, float labels, numbers as text
    assert table.ids.tolist() == ["1", "2", "3"] and table.labels.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(table.features, [[1.5, 20], [2.5, 30], [0.5, 10]])
    with pytest.raises(DataError, match=r"DataFrame: column 1 is named 5; column names must be non-empty text"):
        table_from_frame(pd.DataFrame({"id": [1, 2], 5: [1.0, 2.0]}), ["id"])
    with pytest.raises(DataError, match="DataFrame: has no rows"):
        table_from_frame(pd.DataFrame({"id": [], "a": []}), ["id"])
