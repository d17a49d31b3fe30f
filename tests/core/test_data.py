"""Dataset formats and validation."""

from __future__ import annotations

import pytest

from basin.data import load_dataset
from basin.errors import DatasetError
from tests import factories


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_formats_read_the_same_rows(tmp_path, fmt):
    p = factories.write_classification_dataset(tmp_path / f"d.{fmt}", n=20)
    ds = load_dataset(p, "classification", max_examples=100)
    want = factories.sentences(20, 123)
    assert ds.columns["text"] == [t for t, _ in want] and ds.columns["label"] == [y for _, y in want]
    assert len(ds.sha256) == 64 and ds.num_rows_total == 20


def test_tasks_need_their_columns(tmp_path):
    lm = factories.write_lm_dataset(tmp_path / "lm.jsonl", n=5)
    assert len(load_dataset(lm, "causal_lm", max_examples=10)) == 5
    with pytest.raises(DatasetError, match=r"lm\.jsonl.*\['source', 'target'\]"):
        load_dataset(lm, "seq2seq", max_examples=10)
    s2s = factories.write_seq2seq_dataset(tmp_path / "s.jsonl", n=5)
    assert load_dataset(s2s, "seq2seq", max_examples=10).columns["target"][0] in ("good", "bad")


def test_bad_files(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "a", "label": 0}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2"):
        load_dataset(p, "classification", max_examples=10)
    q = tmp_path / "x.parquet"
    q.write_text("")
    with pytest.raises(DatasetError, match="format"):
        load_dataset(q, "classification", max_examples=10)
    r = tmp_path / "r.csv"
    r.write_text("text,label\na,7\n")
    with pytest.raises(DatasetError, match="outside"):
        load_dataset(r, "classification", max_examples=10, num_labels=2)


def test_text_pair_is_kept(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("text\ttext_pair\tlabel\ngood\tday\t1\nbad\tday\t0\n")
    ds = load_dataset(p, "classification", max_examples=10)
    assert ds.columns["text_pair"] == ["day", "day"]


def test_engine_reads_a_dataset_exactly_as_the_store_accepted_it(tmp_path):
    from service.store import Store

    f = tmp_path / "spaced.csv"
    f.write_text(" text , label\ngood day,1\nbad day,0\n")  # header padded by a spreadsheet
    stored = Store(tmp_path / "store").add_dataset(f, name="spaced.csv")
    assert stored["columns"] == ["text", "label"]
    ds = load_dataset(f, "classification", max_examples=10, seed=0)
    assert ds.columns["text"] == ["good day", "bad day"] and ds.columns["label"] == [1, 0]

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\ngood,1\nbad,0,extra\n")  # would shift columns silently
    with pytest.raises(DatasetError, match="ragged.csv: line 3 has 3 fields"):
        load_dataset(ragged, "classification", max_examples=10, seed=0)
