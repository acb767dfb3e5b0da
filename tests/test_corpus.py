"""Corpus loading: the bundled sample, every kind of bad input, and the `archivesrag corpus` command; the files
`archivesrag.core` reads and writes (JSON Lines, atomic writes)."""
import json
import os
import sys

import pytest
from helpers import run_cli

from archivesrag.core import InputError, read_jsonl
from archivesrag.corpus import load_corpus, load_sample

pytestmark = pytest.mark.fast  # no model beyond MiniLM's tokenizer: the whole file takes seconds


def test_sample_archive_has_passages_with_context():
    ds = load_sample(verbose=False)
    assert len(ds) >= 200
    assert {"id", "doc_id", "title", "text", "fonds", "series", "date", "chunk"} <= set(ds.column_names)
    assert len(set(ds["id"])) == len(ds)  # passage ids are unique
    row = ds[0]
    assert row["id"] == f"{row['doc_id']}#{row['chunk']}"
    assert all(isinstance(row[k], str) and row[k] for k in ("title", "text", "fonds", "series", "date"))


def test_sample_ids_are_stable_across_loads():
    assert load_sample(verbose=False)["id"] == load_sample(verbose=False)["id"]


def test_long_documents_are_chunked_within_the_token_budget():
    from transformers import AutoTokenizer
    from archivesrag.models import resolve_embedder
    tok = AutoTokenizer.from_pretrained(resolve_embedder())
    ds = load_sample(max_tokens=64, overlap=8, verbose=False)
    lengths = [len(ids) for ids in tok(list(ds["text"]), add_special_tokens=False)["input_ids"]]
    assert max(lengths) <= 64 + 2  # a window may re-tokenise a word boundary slightly differently
    assert len(ds) > len(load_sample(verbose=False))


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("name,data,message", [
    ("empty.jsonl", b"", "empty.jsonl: the file is empty"),
    ("blank.jsonl", b"\n\n  \n", "blank.jsonl: the file is empty"),
    ("broken.jsonl", b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "cut\n', "broken.jsonl:2: malformed JSON"),
    ("notext.jsonl", b'{"id": "a", "text": "ok"}\n{"id": "b", "body": "x"}\n', "notext.jsonl:2: record has no 'text' field"),
    ("nonstring.jsonl", b'{"id": "a", "text": ["a", "list"]}\n', "nonstring.jsonl:1: 'text' must be a string, got list"),
    ("latin1.jsonl", '{"id": "a", "text": "Qu\u00e9bec"}\n'.encode("latin-1"), "latin1.jsonl:1: not UTF-8 text"),
    ("dupes.jsonl", b'{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n{"id": "a", "text": "three"}\n',
     "dupes.jsonl:3: duplicate id 'a' (first seen on line 1)"),
    ("array.jsonl", b'["not", "an", "object"]\n', "array.jsonl:1: expected a JSON object"),
    ("deep.jsonl", b'{"id": "a", "text": "ok"}\n' + b"[" * 200_000 + b"]" * 200_000 + b"\n",
     "deep.jsonl:2: JSON nested too deeply"),
    ("surrogate.jsonl", b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "lone \\ud800 half"}\n',
     "surrogate.jsonl:2: a lone surrogate"),
    ("nul.jsonl", b'{"id": "a", "text": "o\x00k"}\n', "nul.jsonl:1: NUL byte at column 23; the file is binary"),
    ("listid.jsonl", b'{"id": ["x"], "text": "one"}\n{"id": "[\'x\']", "text": "two"}\n',
     "listid.jsonl:1: an id must be a string or a number, got list"),
])
def test_bad_input_gets_one_clear_error(tmp_path, name, data, message):
    path = _write(tmp_path, name, data)
    with pytest.raises(InputError) as e:
        load_corpus(path, verbose=False)
    assert message in str(e.value)


def test_bom_is_accepted(tmp_path):
    path = _write(tmp_path, "bom.jsonl", b'\xef\xbb\xbf{"id": "a", "text": "Respect des fonds."}\n')
    assert load_corpus(path, verbose=False)["text"] == ["Respect des fonds."]


def test_empty_text_is_a_counted_skip(tmp_path, capsys):
    path = _write(tmp_path, "gaps.jsonl", b'{"id": "a", "text": "Kept."}\n{"id": "b", "text": "   "}\n')
    ds = load_corpus(path)
    assert ds["id"] == ["a#0"]
    assert "1 skipped empty text" in capsys.readouterr().out


def test_csv_errors_name_the_line(tmp_path):
    path = _write(tmp_path, "rows.csv", b"id,title,text\n1,First,Some text\n2,Second,more,fields,than,header\n")
    with pytest.raises(InputError, match=r"rows.csv:3: more fields than the header"):
        load_corpus(path, verbose=False)
    good = _write(tmp_path, "good.csv", b"id,title,body\n1,First,Some text\n")
    assert load_corpus(good, text_field="body", verbose=False)["title"] == ["First"]


def minimal_pdf(text: str) -> bytes:
    "A one-page PDF with `text`, built by hand with a correct cross-reference table."
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer << /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_folder_with_text_pdf_and_an_unreadable_pdf(tmp_path, capsys):
    folder = tmp_path / "accession"
    (folder / "minutes").mkdir(parents=True)
    (folder / "minutes" / "1998-03_committee.txt").write_text("The committee approved the retention schedule.")
    (folder / "scope.md").write_text("# Scope\nRecords of the harbour board, 1950-1990.")
    (folder / "authority.pdf").write_bytes(minimal_pdf("Disposition authority DA-2020-7"))
    (folder / "damaged.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    ds = load_corpus(folder)
    out = capsys.readouterr().out
    assert "damaged.pdf" in out and "1 skipped unreadable" in out
    assert sorted(ds["doc_id"]) == ["authority.pdf", "minutes/1998-03_committee.txt", "scope.md"]
    assert "DA-2020-7" in ds.filter(lambda r: r["doc_id"] == "authority.pdf")[0]["text"]


def test_cli_prints_one_line_error_without_traceback(tmp_path):
    bad = _write(tmp_path, "bad.jsonl", b'{"id": "a", "text": "ok"}\n{oops}\n')
    r = run_cli("corpus", "--input_file", str(bad), "--output_file", str(tmp_path / "out.jsonl"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"archivesrag corpus: error: {bad}:2: malformed JSON (Expecting property name enclosed in double quotes at column 2)"
    assert "Traceback" not in r.stderr


def test_cli_writes_corpus_jsonl(tmp_path):
    out = tmp_path / "corpus.jsonl"
    r = run_cli("corpus", "--output_file", str(out))
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(out)
    assert len(rows) >= 200 and rows[0]["id"].startswith("ARC-")
    assert "_line" not in json.loads(out.read_text().splitlines()[0])


def test_cli_help_lists_every_step():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("corpus", "gen-query", "mine-hn", "train", "evaluate", "search", "ask", "demo"):
        assert f"  {cmd}" in r.stdout
    assert run_cli("no-such-step").returncode == 2


def corpus_cli_run(tmp_path, *args):
    "`archivesrag corpus ARGS` run in `tmp_path`: (exit status, stderr)."
    r = run_cli("corpus", *args, cwd=tmp_path)
    assert "Traceback" not in r.stderr
    return r.returncode, r.stderr.strip()


def test_surrogate_pair_is_text_and_lone_surrogate_is_an_error(tmp_path):
    ok = _write(tmp_path, "pair.jsonl", b'{"id": "a", "text": "\\ud83d\\ude00 scanned"}\n')
    assert load_corpus(ok, verbose=False)["text"] == ["\U0001F600 scanned"]
    rc, err = corpus_cli_run(tmp_path, "--input_file", _write(tmp_path, "s.jsonl", b'{"text": "x \\udc00"}\n'),
                             "--output_file", "out.jsonl")
    assert rc == 2 and err.startswith("archivesrag corpus: error: ") and "s.jsonl:1: a lone surrogate" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out.jsonl").exists()


def test_nul_byte_message_reads_well(tmp_path):
    bad = _write(tmp_path, "ctl.jsonl", b'{"id": "a", "text": "tab\there"}\n')  # a raw control character, not NUL
    with pytest.raises(InputError) as e:
        read_jsonl(bad)
    assert "at at" not in str(e.value) and "ctl.jsonl:1: malformed JSON (Invalid control character at column" in str(e.value)


def test_output_is_an_existing_folder(tmp_path):
    ok = _write(tmp_path, "ok.jsonl", b'{"id": "a", "text": "Minutes of the board."}\n')
    (tmp_path / "somedir").mkdir()
    rc, err = corpus_cli_run(tmp_path, "--input_file", ok, "--output_file", "somedir")
    assert rc == 2 and err == "archivesrag corpus: error: somedir: is a folder; give a file name, e.g. somedir/out.jsonl"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.jsonl", "somedir"]  # no somedir.tmp
    assert list((tmp_path / "somedir").iterdir()) == []


def test_output_under_a_file_and_output_equal_to_input(tmp_path):
    ok = _write(tmp_path, "ok.jsonl", b'{"id": "a", "text": "Minutes of the board."}\n')
    rc, err = corpus_cli_run(tmp_path, "--input_file", ok, "--output_file", "ok.jsonl/corpus.jsonl")
    assert rc == 2 and "ok.jsonl is a file, not a folder" in err
    rc, err = corpus_cli_run(tmp_path, "--input_file", ok, "--output_file", "ok.jsonl")
    assert rc == 2 and "--output_file is the input file" in err
    assert ok.read_bytes() == b'{"id": "a", "text": "Minutes of the board."}\n'


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc, which only Linux has")
def test_unwritable_folder_and_unreadable_file_via_proc(tmp_path):
    # works as root too: nobody may create files in /proc/self, and reading /proc/self/mem at offset 0 fails (EIO)
    ok = _write(tmp_path, "ok.jsonl", b'{"id": "a", "text": "Minutes of the board."}\n')
    rc, err = corpus_cli_run(tmp_path, "--input_file", ok, "--output_file", "/proc/self/corpus.jsonl")
    assert rc == 2 and "/proc/self/corpus.jsonl: " in err and "/proc/self" in err
    (tmp_path / "mem.jsonl").symlink_to("/proc/self/mem")
    rc, err = corpus_cli_run(tmp_path, "--input_file", "mem.jsonl", "--output_file", "out.jsonl")
    assert rc == 2 and err.startswith("archivesrag corpus: error: mem.jsonl: cannot read the file")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root ignores file permissions; the /proc test covers this case as root")
def test_unwritable_folder_and_unreadable_file_via_chmod(tmp_path):
    ok = _write(tmp_path, "ok.jsonl", b'{"id": "a", "text": "Minutes of the board."}\n')
    locked = tmp_path / "locked"
    locked.mkdir(); locked.chmod(0o500)
    secret = _write(tmp_path, "secret.jsonl", b'{"id": "a", "text": "x"}\n'); secret.chmod(0o000)
    try:
        rc, err = corpus_cli_run(tmp_path, "--input_file", ok, "--output_file", "locked/corpus.jsonl")
        assert rc == 2 and "no permission to write in the folder locked" in err
        rc, err = corpus_cli_run(tmp_path, "--input_file", secret, "--output_file", "out.jsonl")
        assert rc == 2 and "secret.jsonl: cannot read the file (Permission denied)" in err
    finally:
        locked.chmod(0o700); secret.chmod(0o600)


def test_write_atomic_leaves_old_file_or_new(tmp_path):
    from archivesrag.core import write_atomic
    target = tmp_path / "notes.txt"
    write_atomic(target, "first")
    def pieces():
        yield "half"
        raise KeyboardInterrupt  # a crash midway
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, pieces())
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    write_atomic(target, b"second")
    assert target.read_text() == "second"


def test_folder_counts_and_reports_skipped_files(tmp_path):
    folder = tmp_path / "accession"
    folder.mkdir()
    (folder / "letter.txt").write_text("Letter from the harbour master, 1962.")
    (folder / "scan.bin").write_bytes(b"\x00\x01")
    (folder / "export.jsonl").write_text('{"text": "not read from a folder"}\n')
    r = run_cli("corpus", "--input_file", folder, "--output_file", tmp_path / "c.jsonl", "--max_tokens", "0")
    assert r.returncode == 0, r.stderr
    assert "skipped 2 files that are not .txt, .md or .pdf" in r.stdout
    assert "2 skipped other files" in r.stdout and "1 documents" in r.stdout


def test_list_ids_cannot_collide_with_their_string_form(tmp_path):
    from archivesrag.corpus import load_passages
    p = _write(tmp_path, "passages.jsonl", b'{"id": "[\'x\']", "text": "a"}\n{"id": ["x"], "text": "b"}\n')
    with pytest.raises(InputError, match=r"passages.jsonl:2: an id must be a string or a number, got list"):
        load_passages(p)


def test_limit_must_be_positive(tmp_path):
    from archivesrag.corpus import load_passages
    for bad in (0, -1):
        with pytest.raises(InputError, match="--limit must be at least 1"):
            load_passages(None, limit=bad)
