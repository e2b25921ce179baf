"""Caption datasets as users bring them: read_records over CSV, JSONL and class folders, and their errors.

Every image is a real PNG written into tmp_path. Offline, CPU, fast. The datasets built on the records are tested
in test_datasets.py, the augmentations in test_augment.py, the emoji corpus in test_corpus.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.helpers.photos import png
from vlm_vision.training.data import CaptionRecord, MissingImagesError, read_records


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# read_records: CSV
# ---------------------------------------------------------------------------------------------------------------


def test_csv_relative_absolute_label_and_extra_columns(tmp_path):
    a = png(tmp_path / "a.png")
    b = png(tmp_path / "sub" / "b.png")
    elsewhere = png(tmp_path / "other" / "c.png")
    file = write(
        tmp_path / "train.csv",
        f"path,caption,label,notes\na.png,a red square,square,x\nsub/b.png, two words ,,\n{elsewhere},c,,\n",
    )
    assert read_records(file) == [
        CaptionRecord(a, "a red square", "square"),
        CaptionRecord(b, "two words", None),
        CaptionRecord(elsewhere, "c", None),
    ]


def test_csv_without_label_column_and_with_byte_order_mark(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "t.csv").write_bytes("\ufeffcaption,path\nhello,a.png\n".encode())
    (record,) = read_records(tmp_path / "t.csv")
    assert (record.path, record.caption, record.label) == (tmp_path / "a.png", "hello", None)
    assert record.captions == ("hello",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,caption\na.png,x\n", r"t\.csv:1: missing column\(s\) path; the header must name 'path'"),
        ("path,text\na.png,x\n", r"t\.csv:1: missing column\(s\) caption"),
        ("", r"t\.csv:1: missing column\(s\) path, caption"),
        ("path,caption\na.png,ok\na.png,  \n", r"t\.csv:3: empty 'caption' for 'a\.png'"),
        ("path,caption\na.png,ok\n,x\n", r"t\.csv:3: empty 'path'"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, text, message):
    png(tmp_path / "a.png")
    with pytest.raises(ValueError, match=message):
        read_records(write(tmp_path / "t.csv", text))


# ---------------------------------------------------------------------------------------------------------------
# read_records: JSONL
# ---------------------------------------------------------------------------------------------------------------


def test_jsonl_caption_or_captions_list_and_label(tmp_path):
    a, b = png(tmp_path / "a.png"), png(tmp_path / "img" / "b.png")
    lines = [
        {"path": "a.png", "caption": "one caption"},
        {"path": "img/b.png", "captions": ["first", " second "], "label": "bee", "extra": 1},
    ]
    file = write(tmp_path / "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    one, many = read_records(file)
    assert one == CaptionRecord(a, "one caption")
    assert many == CaptionRecord(b, "first", "bee", ("second",))
    assert many.captions == ("first", "second")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"d\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"d\.jsonl:2: expected a JSON object, got list"),
        ('{"caption": "x"}', r"d\.jsonl:2: missing or empty 'path'"),
        ('{"path": "a.png"}', r"d\.jsonl:2: give either 'caption' .* found neither"),
        ('{"path": "a.png", "caption": "x", "captions": ["y"]}', r"d\.jsonl:2: give either .* not both"),
        ('{"path": "a.png", "captions": []}', r"d\.jsonl:2: 'captions' must be a non-empty list"),
        ('{"path": "a.png", "captions": "x"}', r"d\.jsonl:2: 'captions' must be a non-empty list"),
        ('{"path": "a.png", "captions": ["x", " "]}', r"d\.jsonl:2: empty caption ' ' for 'a\.png'"),
        ('{"path": "a.png", "caption": ""}', r"d\.jsonl:2: empty caption '' for 'a\.png'"),
        ('{"path": "a.png", "caption": "x", "label": 3}', r"d\.jsonl:2: 'label' must be a non-empty string"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    png(tmp_path / "a.png")
    file = write(tmp_path / "d.jsonl", '{"path": "a.png", "caption": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_records(file)


def test_cluster_field_from_jsonl_and_csv_and_its_errors(tmp_path):
    a, b = png(tmp_path / "a.png"), png(tmp_path / "b.png")
    jsonl = write(tmp_path / "d.jsonl", json.dumps({"path": "a.png", "caption": "x", "subcategory": " face "}) + "\n"
                  + json.dumps({"path": "b.png", "caption": "y", "subcategory": 7}) + "\n")
    assert [r.cluster for r in read_records(jsonl, cluster_field="subcategory")] == ["face", "7"]
    assert [r.cluster for r in read_records(jsonl)] == [None, None]  # read only when asked for
    csv_file = write(tmp_path / "d.csv", "path,caption,group\na.png,x,hands\nb.png,y,faces\n")
    assert read_records(csv_file, cluster_field="group") == [CaptionRecord(a, "x", cluster="hands"),
                                                            CaptionRecord(b, "y", cluster="faces")]

    with pytest.raises(ValueError, match=r"d\.csv:1: missing column\(s\) kind; .*, and 'kind' for the cluster field"):
        read_records(csv_file, cluster_field="kind")
    blank = write(tmp_path / "blank.csv", "path,caption,group\na.png,x, \n")
    with pytest.raises(ValueError, match=r"blank\.csv:2: 'group' must be a non-empty string or a whole number"):
        read_records(blank, cluster_field="group")
    for value in ("missing", None, True, ["face"]):
        item = {"path": "a.png", "caption": "x"} | ({} if value == "missing" else {"subcategory": value})
        bad = write(tmp_path / "bad.jsonl", json.dumps(item) + "\n")
        with pytest.raises(ValueError, match=r"bad\.jsonl:1: 'subcategory' must be a non-empty string or a whole"):
            read_records(bad, cluster_field="subcategory")
    (tmp_path / "folder" / "cat").mkdir(parents=True)
    png(tmp_path / "folder" / "cat" / "c.png")
    with pytest.raises(ValueError, match=r"names a column of a \.csv or \.jsonl dataset; .* is a folder"):
        read_records(tmp_path / "folder", cluster_field="subcategory")


# ---------------------------------------------------------------------------------------------------------------
# read_records: class folders, and errors common to all sources
# ---------------------------------------------------------------------------------------------------------------


def test_class_folders(tmp_path, caplog):
    root = tmp_path / "root"
    apple = png(root / "red_apple" / "1.png")
    heart_jpg = png(root / "blue-heart" / "x.JPG")
    heart_deep = png(root / "blue-heart" / "more" / "y.webp")
    write(root / "blue-heart" / "notes.txt", "not an image")
    png(root / ".cache" / "z.png")  # hidden folders are not classes
    png(root / "red_apple" / ".ipynb_checkpoints" / "c.png")  # nor data inside a class
    (root / "empty_class").mkdir()
    png(root / "stray.png")  # not inside a class folder
    with caplog.at_level(logging.INFO, logger="vlm_vision.training.data"):
        records = read_records(root)
    assert records == [
        CaptionRecord(heart_deep, "a photo of blue heart.", "blue heart"),  # sorted by path: more/ < x.JPG
        CaptionRecord(heart_jpg, "a photo of blue heart.", "blue heart"),
        CaptionRecord(apple, "a photo of red apple.", "red apple"),
    ]
    assert "Skipped 1 non-image file(s)" in caplog.text
    assert "Skipped class folder" in caplog.text and "empty_class" in caplog.text
    assert "Skipped 1 image(s) directly in" in caplog.text
    assert read_records(root, template="an emoji of {}")[0].caption == "an emoji of blue heart"
    with pytest.raises(ValueError, match=r"needs one \{\} where the class name goes"):
        read_records(root, template="an emoji")
    png(tmp_path / "loose" / "sun.png")  # images, but no class folders
    with pytest.raises(ValueError, match="has no class folders of images: put each class's images in a subfolder"):
        read_records(tmp_path / "loose")


def test_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"doesn't exist: give a \.csv, a \.jsonl or a folder"):
        read_records(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"Unsupported dataset source .*give a \.csv file"):
        read_records(write(tmp_path / "d.json", "{}"))
    with pytest.raises(ValueError, match=r"has no images: a dataset needs at least one record"):
        read_records(write(tmp_path / "e.csv", "path,caption\n"))
    with pytest.raises(ValueError, match=r"has no images"):
        read_records(write(tmp_path / "e.jsonl", "\n"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"has no class folders of images"):
        read_records(tmp_path / "empty")


def test_missing_images_are_counted_and_the_first_few_shown(tmp_path):
    png(tmp_path / "here.png")
    rows = ["here.png,ok"] + [f"gone{i}.png,x" for i in range(7)]
    file = write(tmp_path / "t.csv", "path,caption\n" + "\n".join(rows) + "\n")
    with pytest.raises(MissingImagesError) as info:
        read_records(file)
    message = str(info.value)
    assert message.startswith(f"7 of 8 images referenced by {file} are missing")
    assert all(f"gone{i}.png" in message for i in range(5)) and "gone5.png" not in message
    assert "... and 2 more" in message
    assert isinstance(info.value, FileNotFoundError) and len(info.value.missing) == 7


def test_caption_record_rejects_empty_captions(tmp_path):
    with pytest.raises(ValueError, match="Captions must be non-empty strings"):
        CaptionRecord(tmp_path / "a.png", "ok", None, ("",))
