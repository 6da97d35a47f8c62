"""Issue 32 part 5: Gato's other domains read from the files these datasets ship as. VQAv2's official question and
annotation files with COCO image names, COCO captions, Hugging Face ``datasets`` Parquet and Arrow shards (text and
image-text, streamed a chunk at a time), and held-out caption/VQA samples at the evaluation patch positions.

The Hugging Face fixtures in tests/data/domains_hf were written by the real ``datasets`` library (its
make_fixtures.py); the VQAv2 and COCO fixtures are written here to the official layouts (field for field as the
files visualqa.org and cocodataset.org ship)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gato_robot.core.sequence import patch_position_index
from gato_robot.core.tokenizer import patchify
from gato_robot.domains import text, vision
from gato_robot.domains.damage import DomainDataError

HF = Path(__file__).parent / "data" / "domains_hf"
KW = dict(context=128, seed=0, stream=0, domain_id=0, max_damaged=2, image_size=32, text_model=None)
IMAGE_IDS = (42, 73, 1000, 581929)


def _grey(level: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), level, np.uint8)


def _level(image_id: int) -> int:
    """Image ``image_id``'s grey level: the answer, the caption and the pixels all carry it."""
    return 40 + 50 * IMAGE_IDS.index(image_id)


def write_vqav2(root: Path, split: str = "val2014", *, image_names: str = "coco2014", images_dir: Path | None = None,
                ids=IMAGE_IDS) -> Path:
    """VQAv2's official files for ``ids`` (one question each, the ten annotators' answers), and the images."""
    root.mkdir(parents=True, exist_ok=True)
    folder = images_dir or root / split
    folder.mkdir(parents=True, exist_ok=True)
    questions, annotations = [], []
    for iid in ids:
        name = f"COCO_{split}_{iid:012d}.jpg" if image_names == "coco2014" else f"{iid:012d}.jpg"
        iio.imwrite(folder / name, _grey(_level(iid)))
        qid = iid * 1000 + 1
        questions.append({"image_id": iid, "question": f"what is the grey level of image {iid}?", "question_id": qid})
        answers = [f"level {_level(iid)}"] * 6 + ["grey"] * 4
        annotations.append({"question_type": "what is the", "multiple_choice_answer": f"level {_level(iid)}",
                            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                                        for j, a in enumerate(answers)],
                            "image_id": iid, "answer_type": "other", "question_id": qid})
    info = {"description": "This is v2.0 of the VQA dataset.", "version": "2.0", "year": 2017}
    (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps(
        {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": split,
         "questions": questions}))
    (root / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps(
        {"info": info, "license": {}, "data_subtype": split, "annotations": annotations, "data_type": "mscoco"}))
    return root


def _valid(s: dict) -> dict:
    n = int(s["valid"].sum())
    return {k: (v[:n] if getattr(v, "ndim", 0) else v) for k, v in s.items()}


def _check_vqa_samples(ds: vision.VQADataset, n: int = 8, distinct: int = 2) -> None:
    """Every sample's answer and image are those of its question (the grey level is in all three)."""
    seen = set()
    for i in range(n):
        s = _valid(ds[i])
        first = int(np.flatnonzero(s["loss_mask"])[0])
        question = ds.tok.decode(s["tokens"][s["is_image"].sum():first])
        iid = int(re.fullmatch(r"question: what is the grey level of image (\d+)\? answer:", question).group(1))
        assert ds.tok.decode(s["tokens"][first:]) == f"level {_level(iid)}"
        assert abs(float(s["pixels"][s["is_image"]].mean()) - _level(iid)) < 3, "the question's own image"
        seen.add(iid)
    assert len(seen) >= distinct


# -- VQAv2 -------------------------------------------------------------------------------------------------
def test_vqav2_official_names_and_coco_2014_image_names_load(tmp_path):
    root = write_vqav2(tmp_path / "vqa")
    (root / "v2_OpenEnded_mscoco_test-dev2015_questions.json").write_text('{"questions": []}')  # no annotations
    for source in (root, root / "v2_OpenEnded_mscoco_val2014_questions.json"):
        ds = vision.VQADataset([source], **KW)
        assert len(ds) == len(IMAGE_IDS)
        assert ds.entries[0][0] == str(root / "val2014" / "COCO_val2014_000000000042.jpg")
        _check_vqa_samples(ds)


def test_vqa_answer_is_multiple_choice_answer_else_the_most_common():
    ann = {"multiple_choice_answer": "yes", "answers": [{"answer": "no"}] * 6 + [{"answer": "yes"}] * 4}
    assert vision._answer(ann) == "yes"
    assert vision._answer({"answers": [{"answer": "no"}] * 6 + [{"answer": "yes"}] * 4}) == "no"


def test_vqa_api_layout_and_coco_2017_names_are_found(tmp_path):
    # the VQA API's layout: Questions/, Annotations/, Images/mscoco/<subtype>/ with COCO 2014 names
    root = tmp_path / "VQA"
    write_vqav2(root / "tmp", images_dir=root / "Images" / "mscoco" / "val2014")
    (root / "Questions").mkdir()
    (root / "Annotations").mkdir()
    (root / "tmp" / "v2_OpenEnded_mscoco_val2014_questions.json").rename(
        root / "Questions" / "v2_OpenEnded_mscoco_val2014_questions.json")
    (root / "tmp" / "v2_mscoco_val2014_annotations.json").rename(
        root / "Annotations" / "v2_mscoco_val2014_annotations.json")
    _check_vqa_samples(vision.VQADataset([root], **KW), 4)
    # newer COCO names (<12-digit id>.jpg) in a folder given by the config
    other = write_vqav2(tmp_path / "v2", image_names="coco2017", images_dir=tmp_path / "coco" / "all")
    ds = vision.VQADataset([other], images=str(tmp_path / "coco" / "all"), **KW)
    assert ds.entries[0][0].endswith("/000000000042.jpg")
    _check_vqa_samples(ds, 4)


def test_vqa_image_pattern_and_folder_come_from_the_training_config(tmp_path):
    from gato_robot.training import mixture
    from gato_robot.training.config import apply_overrides, preset

    root = write_vqav2(tmp_path / "vqa", image_names="coco2017", images_dir=tmp_path / "unused")
    pics = tmp_path / "pics"
    pics.mkdir()
    for iid in IMAGE_IDS:  # names no automatic pattern finds
        iio.imwrite(pics / f"img-{iid}.png", _grey(_level(iid)))
    base = preset("tiny-cpu")
    with pytest.raises(DomainDataError, match=r"image_pattern"):  # the automatic search names what it tried
        vision.VQADataset([root], images=str(pics), **KW)
    cfg = apply_overrides(base, [f"data.domains=vqa:{root}", f"data.domains.vqa.images={pics}",
                                 "data.domains.vqa.image_pattern=img-{image_id}.png", "data.eval_fraction=0.25"])
    assert cfg.data.domains[0].image_pattern == "img-{image_id}.png" and cfg.data.domains[0].images == str(pics)
    assert apply_overrides(cfg, []).data.domains == cfg.data.domains  # survives the JSON round trip
    mix, evals, *_ = mixture.build(cfg, 128)
    assert len(mix.datasets[0]) == 3 and len(evals[0]) == 1 and evals[0].train is False
    _check_vqa_samples(mix.datasets[0], 4)
    with pytest.raises(ValueError, match="no domain named 'caption'"):
        apply_overrides(cfg, ["data.domains.caption.images=x"])
    with pytest.raises(ValueError, match="image_pattern"):
        apply_overrides(cfg, ["data.domains.vqa.image_pattern=COCO_{year}.jpg"])
    with pytest.raises(ValueError, match="image_pattern names VQA images"):
        apply_overrides(base, [f"data.domains=caption:{root}", "data.domains.caption.image_pattern={image_id}.jpg"])


def test_vqa_missing_images_are_skipped_with_a_count_and_none_is_a_clear_error(tmp_path, caplog):
    root = write_vqav2(tmp_path / "vqa")
    gone = root / "val2014" / "COCO_val2014_000000000073.jpg"
    gone.unlink()
    with caplog.at_level(logging.WARNING):
        ds = vision.VQADataset([root], **KW)
    assert len(ds) == len(IMAGE_IDS) - 1
    assert "1 missing image files: their 1 entries skipped" in caplog.text and str(gone) in caplog.text
    for f in (root / "val2014").iterdir():
        f.unlink()
    with pytest.raises(DomainDataError, match=r"COCO_val2014_000000000042\.jpg"):
        vision.VQADataset([root], **KW)
    with pytest.raises(DomainDataError, match=r"COCO_val2014_000000000042\.jpg"):  # a pattern given: same message
        vision.VQADataset([root], image_pattern="COCO_{split}_{image_id:012d}.jpg", **KW)


def test_vqa_folder_with_two_splits_is_refused(tmp_path):
    root = write_vqav2(tmp_path / "vqa", "val2014")
    write_vqav2(root, "train2014")
    with pytest.raises(DomainDataError, match="several splits"):
        vision.VQADataset([root], **KW)
    ds = vision.VQADataset([root / "v2_OpenEnded_mscoco_train2014_questions.json"], **KW)
    assert "train2014" in ds.entries[0][0]


# -- COCO captions -----------------------------------------------------------------------------------------
def test_coco_captions_official_layout(tmp_path):
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "val2017").mkdir()
    images, anns = [], []
    for k, iid in enumerate(IMAGE_IDS):
        name = f"{iid:012d}.jpg"
        iio.imwrite(coco / "val2017" / name, _grey(_level(iid)))
        images.append({"license": 4, "file_name": name, "coco_url": "", "height": 48, "width": 64,
                       "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": iid})
        anns += [{"image_id": iid, "id": 10 * k + j, "caption": f"a flat image at level {_level(iid)}"}
                 for j in range(2)]
    (coco / "annotations" / "captions_val2017.json").write_text(json.dumps(
        {"info": {"year": 2017}, "licenses": [], "images": images, "annotations": anns}))
    for source in (coco, coco / "annotations" / "captions_val2017.json"):
        ds = vision.CaptionDataset([source], **KW)
        assert len(ds) == 2 * len(IMAGE_IDS)
        for i in range(6):
            s = _valid(ds[i])
            level = int(ds.tok.decode(s["tokens"][s["is_image"].sum():]).rsplit(" ", 1)[1])
            assert abs(float(s["pixels"][s["is_image"]].mean()) - level) < 3


# -- Hugging Face shards: text -----------------------------------------------------------------------------
def _texts(ds: text.TextDataset, n: int = 12) -> list[str]:  # (documents fit the context whole)
    return [ds.tok.decode(_valid(ds[i])["tokens"]) for i in range(n)]


def test_text_from_hf_parquet_shards(tmp_path):
    data = HF / "text_parquet" / "data"
    with pytest.raises(DomainDataError, match=r"several splits \(test, train\)"):
        text.TextDataset([data], context=256, seed=0)
    ds = text.TextDataset([str(data / "train-*.parquet")], context=256, seed=0)
    assert len(ds) == 10 and len(ds.chunks) == 3  # three row groups
    got = _texts(ds)
    assert all("test document" not in t for t in got) and len({t.split(":")[0] for t in got}) > 3
    held = text.TextDataset([data / "test-00000-of-00001.parquet"], context=256, seed=0)
    assert all(t.startswith("test document") for t in _texts(held, 4))
    with pytest.raises(DomainDataError, match=r"no column 'body'.*\['text', 'id'\]"):
        text.TextDataset([data / "train-00000-of-00001.parquet"], context=64, seed=0, field="body", max_damaged=0)


def test_text_from_hf_arrow_save_to_disk(tmp_path):
    with pytest.raises(DomainDataError, match=r"DatasetDict.*\['train', 'test'\].*text_arrow/train"):
        text.TextDataset([HF / "text_arrow"], context=256, seed=0)
    ds = text.TextDataset([HF / "text_arrow" / "train"], context=256, seed=0)
    assert len(ds) == 10 and {Path(c.path).name for c in ds.chunks} == {"data-00000-of-00002.arrow",
                                                                        "data-00001-of-00002.arrow"}
    numbers = {int(t.split(":")[0].split()[-1]) for t in _texts(ds, 30)}
    assert min(numbers) < 5 <= max(numbers), "documents of both shards"
    train = text.TextDataset([HF / "text_arrow" / "train"], context=256, seed=0, split="train", eval_fraction=0.2)
    held = text.TextDataset([HF / "text_arrow" / "train"], context=256, seed=0, split="eval", eval_fraction=0.2)
    assert (len(train), len(held)) == (8, 2)
    assert {t.split(":")[0] for t in _texts(held, 8)} == {"train document 8", "train document 9"}


def _corpus(path: Path, groups: int, rows: int) -> Path:
    """A Parquet text corpus of ``groups`` row groups, the layout the Hub's shards have."""
    docs = [f"document {g}-{r}: " + " ".join(f"tok{g}w{r}w{j}" for j in range(40)) for g in range(groups)
            for r in range(rows)]
    pq.write_table(pa.table({"text": docs}), path, row_group_size=rows)
    return path


def test_text_streams_a_chunk_at_a_time_and_tokenizes_on_demand(tmp_path, monkeypatch):
    path = _corpus(tmp_path / "train-00000-of-00001.parquet", groups=40, rows=25)
    read_groups: list[int] = []
    whole = pq.ParquetFile.read
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("read the whole file") or whole(*a, **k))
    real = pq.ParquetFile.read_row_group

    def spy(self, i, *a, **k):
        read_groups.append(i)
        return real(self, i, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    ds = text.TextDataset([path], context=64, seed=0, cache_tokens=2000, cache_chars=30_000)  # ~2 row groups
    assert len(ds) == 1000 and not read_groups and ds.tokenized == 0, "loading reads the footer only"
    for i in range(10):
        ds[i]
    assert len(read_groups) <= 10 and ds.tokenized <= 10, "one row group and one document per sample at most"
    for i in range(10, 200):
        ds[i]
        assert ds.cached_tokens <= 2000 + 200 and ds.cached_chars <= 30_000 + 15_000, "bounded buffers"
    assert len(set(read_groups)) > 20 and len(read_groups) > 40, "row groups are dropped and read again"
    fresh = text.TextDataset([path], context=64, seed=0)  # another cache state, same samples
    for i in (3, 150, 199):
        assert np.array_equal(fresh[i]["tokens"], ds[i]["tokens"])
    assert not np.array_equal(fresh[0]["tokens"], text.TextDataset([path], context=64, seed=1)[0]["tokens"])


def test_text_jsonl_is_checked_at_load_but_not_tokenized(tmp_path, monkeypatch):
    from gato_robot.core.tokenizer import TextTokenizer

    calls = []
    real = TextTokenizer.encode
    monkeypatch.setattr(TextTokenizer, "encode", lambda self, t, *a: calls.append(t) or real(self, t, *a))
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"line {i} " + "word " * 100}) for i in range(3000)))
    ds = text.TextDataset([path], context=32, seed=0)
    assert not calls, "nothing is tokenized at load"
    assert len(ds) == 3000 and len(ds.chunks) > 1
    ds[0]
    assert len(calls) == 1


# -- Hugging Face shards: image-text -----------------------------------------------------------------------
@pytest.mark.parametrize("source", ["caption_parquet/data", "caption_arrow",
                                    "caption_parquet/data/train-00000-of-00001.parquet"])
def test_captions_from_hf_image_shards(source):
    ds = vision.CaptionDataset([HF / source], **KW)
    assert len(ds) == 6 and not ds.entries
    levels = set()
    for i in range(10):
        s = _valid(ds[i])
        n_img = int(s["is_image"].sum())
        assert n_img == 4 and not s["loss_mask"][:n_img].any() and s["loss_mask"][n_img:].all()
        caption = ds.tok.decode(s["tokens"][n_img:])
        level = int(caption.rsplit(" ", 1)[1])
        assert caption.startswith("a grey square of level") and abs(float(s["pixels"][:n_img].mean()) - level) < 2
        levels.add(level)
    assert len(levels) > 2


def test_caption_shards_with_a_list_column_and_path_only_images(tmp_path):
    (tmp_path / "pics").mkdir()
    iio.imwrite(tmp_path / "pics" / "a.png", _grey(90, 32, 32))
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("sentences", pa.list_(pa.string()))])
    rows = [{"image": {"bytes": None, "path": "pics/a.png"}, "sentences": ["one flat square", "a grey square"]}] * 3
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "train-00000-of-00001.parquet")
    ds = vision.CaptionDataset([tmp_path / "train-00000-of-00001.parquet"], text_field="sentences", **KW)
    got = {ds.tok.decode(_valid(ds[i])["tokens"][4:]) for i in range(12)}
    assert got == {"one flat square", "a grey square"}
    assert abs(float(_valid(ds[0])["pixels"][:4].mean()) - 90) < 2


# -- held-out samples at the evaluation patch positions ----------------------------------------------------
def test_held_out_caption_and_vqa_samples_use_the_evaluation_patch_positions(tmp_path):
    from gato_robot.training import mixture
    from gato_robot.training.config import apply_overrides, preset

    scenes = tmp_path / "scenes"
    vision.generate(scenes, images=8, seed=0)
    _, rows, cols = patchify(np.zeros((64, 64, 3), np.uint8))
    mean_rows, mean_cols = patch_position_index(rows, None), patch_position_index(cols, None)
    cfg = apply_overrides(preset("tiny-cpu"), [f"data.domains=caption:{scenes},vqa:{scenes}",
                                               "data.eval_fraction=0.25"])
    mix, evals, *_ = mixture.build(cfg, 128)
    for k in range(2):
        for i in range(4):
            held, train = evals[k][i], mix.datasets[k][i]
            img = held["is_image"]
            assert np.array_equal(held["patch_row"][img], mean_rows)
            assert np.array_equal(held["patch_col"][img], mean_cols)
            assert not np.array_equal(train["patch_row"][train["is_image"]], mean_rows), "training: random"


def test_vqa_training_and_held_out_splits_take_their_images_from_their_split_folders(tmp_path):
    from gato_robot.training import mixture
    from gato_robot.training.config import apply_overrides, preset

    vqa, coco = tmp_path / "vqa", tmp_path / "coco"
    write_vqav2(vqa, "train2014", images_dir=coco / "train2014", ids=IMAGE_IDS[:3])
    write_vqav2(vqa, "val2014", images_dir=coco / "val2014", ids=IMAGE_IDS[3:])
    cfg = apply_overrides(preset("tiny-cpu"), [
        f"data.domains=vqa:{vqa / 'v2_OpenEnded_mscoco_train2014_questions.json'}",
        f"data.domains.vqa.images={coco / '{split}'}",
        f"data.domains.vqa.eval_paths={vqa / 'v2_OpenEnded_mscoco_val2014_questions.json'}"])
    mix, evals, *_ = mixture.build(cfg, 128)
    assert {Path(e[0]).parent.name for e in mix.datasets[0].entries} == {"train2014"} and len(mix.datasets[0]) == 3
    assert [Path(e[0]).name for e in evals[0].entries] == ["COCO_val2014_000000581929.jpg"]
    _check_vqa_samples(evals[0], 2, distinct=1)
