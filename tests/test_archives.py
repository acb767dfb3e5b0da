"""Archival loaders (archivesrag.archives): every fixture loads, hierarchy and access are consistent, internal and
unpublished content never reaches a record, and unsafe or malformed XML is refused in one line."""

import pytest

from archivesrag.archives import (archives_path, check_doctype, detect_kind, load_archive, parse_access,
                                  parse_date_text, RECORD_FIELDS)
from archivesrag.core import InputError

pytestmark = pytest.mark.fast

FIXTURES = sorted(p for p in archives_path().rglob("*") if p.suffix in (".xml", ".csv"))
HIDDEN_MARKERS = ("ZQX-INTERNAL", "ZQX-UNPUBLISHED")


def _load(rel):
    return load_archive(archives_path(rel))


def test_fixtures_present():
    names = {p.relative_to(archives_path()).as_posix() for p in FIXTURES}
    assert sum(n.startswith("ead/arclight/") for n in names) == 8
    assert sum(n.startswith("alto/cremma/") for n in names) == 3
    for n in ("ead/written/harbour-board-ead3.xml", "csv/st-brigids-school-atom.csv", "oai/northport-oai-dc.xml",
              "alto/written/ledger-page-alto-v3.xml"):
        assert n in names
    assert (archives_path() / "LICENSES.md").exists()


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_every_fixture_loads_with_counts(path):
    recs, counts = load_archive(path)
    assert counts.get("records", 0) == len(recs)
    if recs:
        assert sum(v for k, v in counts.items() if k.startswith("level:")) == len(recs)
        assert sum(counts.get(f"access:{s}", 0) for s in ("open", "restricted", "closed")) == len(recs)
    else:  # only a finding aid whose archdesc is itself unpublished loads nothing
        assert counts["unpublished_dropped"] >= 1
    ids = [r["id"] for r in recs]
    assert len(set(ids)) == len(ids)
    byid = {r["id"]: r for r in recs}
    for r in recs:
        assert list(r)[:len(RECORD_FIELDS)] == list(RECORD_FIELDS)
        assert r["access"]["status"] in ("open", "restricted", "closed")
        assert r["text_kind"] in ("description", "content")
        for d in ("date_start", "date_end"):
            assert r[d] is None or len(r[d]) == 10
        if r["date_start"]: assert r["date_start"] <= r["date_end"]
        p = r["parent_id"]
        if p is None or p.startswith("atom-slug:"):
            assert r["breadcrumb"] == []
        else:
            assert p in byid and ids.index(p) < ids.index(r["id"])
            assert r["breadcrumb"] == byid[p]["breadcrumb"] + [byid[p]["title"]]
            assert r["doc_id"] == byid[p]["doc_id"]
    assert not any(m in repr(recs) for m in HIDDEN_MARKERS)


def test_arclight_counts():
    expected = {"alphaomegaalpha.xml": 39, "ncaids544-id-test.xml": 13, "deeply-nested-components.xml": 32,
                "large-components-list.xml": 405, "no-ids-recordgrp-level.xml": 5,
                "a0011.xml": 0, "m0198_from_ASpace.xml": 0, "pc0170.xml": 0}  # last three: archdesc audience="internal"
    got = {p.name: len(load_archive(p)[0]) for p in archives_path("ead/arclight").rglob("*.xml")}
    assert got == expected
    recs, counts = _load("ead/arclight/nlm/alphaomegaalpha.xml")
    assert (counts["access:closed"], counts["access:restricted"], counts["access:open"]) == (32, 1, 6)
    restricted = [r for r in recs if r["access"]["status"] == "restricted"]
    assert restricted[0]["access"]["until"] == "2018-01-01"  # a past date is kept; the policy decides
    assert counts["level:collection"] == 1 and counts["level:series"] == 7


def test_ead3_hierarchy_access_and_fields():
    recs, counts = _load("ead/written/harbour-board-ead3.xml")
    assert counts["format:ead3"] == 1
    byid = {r["id"]: r for r in recs}
    root = byid["hbr-0001"]
    assert (root["level"], root["ref_code"], root["creator"], root["language"]) == ("fonds", "HBR", "Northport Harbour Board", "eng")
    assert (root["date_start"], root["date_end"]) == ("1872-01-01", "1998-12-31")
    f = byid["hbr-0001_hbr-2-1"]
    assert f["breadcrumb"] == ["Records of the Northport Harbour Board", "Personnel files"]
    assert f["parent_id"] == "hbr-0001_hbr-2" and f["ref_code"] == "HBR-2-1"
    assert f["access"] == {"status": "closed", "until": "2071-01-01", "rule": "Closed until 1 January 2071 under data protection law."}
    assert f["creator"] == "Marsh, Edith"
    assert byid["hbr-0001_hbr-2-2"]["access"]["status"] == "closed" and byid["hbr-0001_hbr-2-2"]["access"]["until"] is None
    assert byid["hbr-0001_hbr-3-1-1"]["access"]["until"] == "2005-01-01"        # inherited two levels up
    assert byid["hbr-0001_hbr-3-2"]["access"] == {"status": "restricted", "until": "2090-12-31",
                                                  "rule": "Restricted until 31 December 2090 at the request of the donor."}
    assert byid["hbr-0001_hbr-3-1-1"]["level"] is None                            # levels are not inherited
    assert byid["hbr-0001_hbr-3-1"]["level"] == "dossier"
    assert byid["hbr-0001_c1.2"]["date_start"] is None                            # "n.d."
    assert byid["hbr-0001_hbr-3-2"]["date_start"] is None                         # "circa 1980s": a decade, ambiguous
    assert byid["hbr-0001_hbr-3"]["date_start"] == "1902-01-01"                   # dateset
    assert "Staff only" not in byid["hbr-0001_hbr-1"]["text"] and "Signed minutes" in byid["hbr-0001_hbr-1"]["text"]
    assert "Open for research" not in root["text"]                                # the access note is not text
    assert (counts["internal_dropped"], counts["unpublished_dropped"], counts["undated"]) == (2, 2, 2)
    assert (counts["access:open"], counts["access:restricted"], counts["access:closed"]) == (4, 4, 3)


def test_atom_csv():
    recs, counts = _load("csv/st-brigids-school-atom.csv")
    byref = {r["ref_code"]: r for r in recs}
    assert counts["format:atom_csv"] == 1 and counts["unpublished_dropped"] == 2 and len(recs) == 9
    assert byref["SCH"]["creator"] == "St Brigid's School"                        # the Creation event, not Accumulation
    assert byref["SCH"]["language"] == "en|ga"
    assert (byref["SCH"]["date_start"], byref["SCH"]["date_end"]) == ("1885-01-01", "2001-12-31")  # 1885-00-00
    assert byref["SCH-1-1"]["creator"] == "Mary Keane"
    assert byref["SCH-1-2"]["access"]["status"] == "restricted" and byref["SCH-1-2"]["access"]["until"] == "2010-01-01"
    assert byref["SCH-2-1"]["access"]["until"] == "2045-01-01"                    # inherited from its series
    assert byref["SCH-3-1"]["access"]["until"] == "2099-01-01"
    assert byref["SCH-3"]["date_start"] is None                                   # NULL dates, "circa 1950s"
    assert byref["PAR-7"]["parent_id"] == "atom-slug:northport-parish-records"
    assert byref["SCH-2-1"]["breadcrumb"] == ["Records of St Brigid's School", "Admission registers"]
    assert "Kept in the school attic" in byref["SCH"]["text"]


def test_oai_dc():
    recs, counts = _load("oai/northport-oai-dc.xml")
    assert (len(recs), counts["deleted"], counts["resumption_token"]) == (3, 1, "northport-oai-dc-page-2")
    r = recs[0]
    assert (r["ref_code"], r["creator"], r["language"], r["date_start"], r["date_end"]) == (
        "MS 12", "Lowry, Thomas", "eng", "1903-01-01", "1911-12-31")
    assert "wreck of the Mary Ellen" in r["text"]
    assert recs[1]["access"]["status"] == "closed" and recs[1]["access"]["until"] == "2051-01-01"
    assert recs[2]["access"]["status"] == "open"                                  # a licence is not an access rule


def test_alto_v3_hyphenation_and_confidence():
    recs, counts = _load("alto/written/ledger-page-alto-v3.xml")
    r = recs[0]
    assert r["text_kind"] == "content" and r["level"] == "page"
    assert "inner harbour\nbegan" in r["text"] and "dredger" in r["text"]
    assert "har bour" not in r["text"] and "dred " not in r["text"]
    assert counts["low_confidence_words"] == 3 and counts["hyphenations_joined"] == 2
    assert r["wc"] == pytest.approx(0.8574, abs=1e-4)
    assert load_archive(archives_path("alto/written/ledger-page-alto-v3.xml"), wc_floor=0.9)[1]["low_confidence_words"] == 7


def test_alto_cremma_folder():
    recs, counts = load_archive(archives_path("alto/cremma"))
    assert len(recs) == 3 and counts["format:alto"] == 3
    assert all(r["wc"] is None for r in recs)
    assert recs[0]["text"].startswith("Ceci est mon Testament")


def test_whole_folder_ids_unique():
    recs, counts = load_archive(archives_path())
    assert len({r["id"] for r in recs}) == len(recs) > 500
    assert not any(m in repr(recs) for m in HIDDEN_MARKERS)


@pytest.mark.parametrize("rule,status,until", [
    ("Open for research.", "open", None), ("There are no restrictions on access.", "open", None),
    ("Unrestricted.", "open", None), ("Closed until 2031.", "closed", "2031-01-01"),
    ("Restricted until 1 January 2030.", "restricted", "2030-01-01"),
    ("Embargoed until March 2030.", "restricted", "2030-03-01"),
    ("Closed for 50 years after death.", "closed", None),
    ("Access by appointment only, with the archivist's permission.", "closed", None),
    ("Mostly illegible terms.", "closed", None)])
def test_parse_access(rule, status, until):
    a = parse_access(rule)
    assert (a["status"], a["until"], a["rule"]) == (status, until, rule)


def test_parse_date_text():
    assert parse_date_text("1914-1918") == ("1914-01-01", "1918-12-31")
    assert parse_date_text("ca. 1967") == ("1967-01-01", "1967-12-31")
    assert parse_date_text("1920s") == (None, None)
    assert parse_date_text("1931, 1935, 1940") == (None, None)


# XML safety ---------------------------------------------------------------------------------------------------

DTD_ONLY = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE ead PUBLIC "+//ISBN 1-931666-00-8//DTD ead.dtd (Encoded Archival Description (EAD) Version 2002)//EN" "http://www.loc.gov/ead/ead.dtd">
<ead><eadheader><eadid>dtd-only-1</eadid></eadheader>
<archdesc level="collection"><did><unittitle>Papers</unittitle><unitid>MS 1</unitid><unitdate normal="1900/1910">1900-1910</unitdate></did>
<accessrestrict><p>Closed until 2031.</p></accessrestrict>
<dsc><c01 level="series"><did><unittitle>Letters</unittitle><unitid>1</unitid></did></c01></dsc></archdesc></ead>
"""


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_external_entity_refused(tmp_path):
    p = tmp_path / "xxe.xml"
    p.write_text('<?xml version="1.0"?>\n<!DOCTYPE ead [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
                 '<ead><archdesc level="fonds"><did><unittitle>&xxe;</unittitle></did></archdesc></ead>')
    with pytest.raises(InputError) as e: load_archive(p)
    msg = _one_line(e)
    assert str(p) in msg and "external entit" in msg and "line 2" in msg


def test_billion_laughs_refused(tmp_path):
    ents = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    p = tmp_path / "lol.xml"
    p.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE ead [{ents}]>\n<ead>&lol9;</ead>')
    with pytest.raises(InputError) as e: load_archive(p)
    assert "10 entities" in _one_line(e)


def test_dtd_only_ead2002_loads(tmp_path):
    p = tmp_path / "dtd.xml"
    p.write_text(DTD_ONLY)
    check_doctype(p)
    assert detect_kind(p) == "ead2002"
    recs, counts = load_archive(p)
    assert [r["ref_code"] for r in recs] == ["MS 1", "MS 1-1"]
    assert recs[1]["access"] == {"status": "closed", "until": "2031-01-01", "rule": "Closed until 2031."}


def test_truncated_file_refused(tmp_path):
    p = tmp_path / "cut.xml"
    p.write_text(DTD_ONLY[:400])
    with pytest.raises(InputError) as e: load_archive(p)
    msg = _one_line(e)
    assert str(p) in msg and "line" in msg and "not well-formed" in msg


def test_non_archive_refused(tmp_path):
    p = tmp_path / "page.xml"
    p.write_text("<html><body>hello</body></html>")
    with pytest.raises(InputError) as e: load_archive(p)
    assert "<html>" in _one_line(e)
    q = tmp_path / "people.csv"
    q.write_text("name,age\nAda,36\n")
    with pytest.raises(InputError) as e: load_archive(q)
    assert "legacyId" in _one_line(e)


def test_folder_skips_non_archives(tmp_path):
    (tmp_path / "dtd.xml").write_text(DTD_ONLY)
    (tmp_path / "page.xml").write_text("<html/>")
    (tmp_path / "scan.jpg").write_bytes(b"\xff\xd8")
    recs, counts = load_archive(tmp_path)
    assert len(recs) == 2 and counts["skipped_not_archive"] == 1 and counts["skipped_files"] == 1


def test_bad_csv_one_line(tmp_path):
    p = tmp_path / "atom.csv"
    p.write_text("legacyId,parentId,title\n1,,Fonds\n1,,Again\n")
    with pytest.raises(InputError) as e: load_archive(p)
    assert "line 3" in _one_line(e)
    p.write_text("legacyId,parentId,title\n1,2,A\n2,1,B\n")
    with pytest.raises(InputError) as e: load_archive(p)
    assert "cycle" in _one_line(e)
