"""Image-text rows as a Hugging Face ``datasets.Dataset`` (the form image-caption sets come in from the hub):
``load_parallel`` accepts an ``image`` column that is a ``datasets.Image`` feature (PIL images, image files) or
file paths, keeps the images undecoded, decodes a batch's passage images when the batch is read, and checks
the rows as for JSONL (one image per group, readable images), naming the row index, group and language."""
from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from mlret_plugin.multimodal import build_dual_encoder
from mlret_plugin.multimodal.encoder import TinyImageEncoder
from mlret_plugin.training import HybridBatchSampler, load_parallel
from mlret_plugin.training.image_data import IMAGE_DATA_COLUMN, is_image_dataset
from tiny_models import tiny_sentence_transformer

LANGS = ("de", "en", "es")
N_GROUPS = 8
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog")


def picture(g: int, size: int = 20) -> Image.Image:
    return Image.fromarray(np.random.default_rng(100 + g).integers(0, 256, (size, size, 3), dtype=np.uint8))


def group_of(image: Image.Image) -> int:
    return next(g for g in range(N_GROUPS) if np.array_equal(np.asarray(image), np.asarray(picture(g))))


def columns(images: list) -> dict[str, list]:
    """Row order: group 0 in de, en, es, then group 1, ...; ``images[g]`` is group g's image."""
    rows = [(g, lang) for g in range(N_GROUPS) for lang in LANGS]
    return {"group_id": [f"g{g}" for g, _ in rows], "lang": [lang for _, lang in rows],
            "query": [f"{lang} {WORDS[g]}" for g, lang in rows], "image": [images[g] for g, _ in rows],
            "source": ["hub"] * len(rows)}  # an extra column, ignored


def pil_dataset() -> datasets.Dataset:
    ds = datasets.Dataset.from_dict(columns([picture(g) for g in range(N_GROUPS)]))
    assert isinstance(ds.features["image"], datasets.Image)  # what datasets makes of PIL images
    return ds


def file_dataset(folder, as_feature: bool = True) -> datasets.Dataset:
    paths = []
    for g in range(N_GROUPS):
        picture(g).save(folder / f"img{g}.png")
        paths.append(str(folder / f"img{g}.png"))
    ds = datasets.Dataset.from_dict(columns(paths))
    return ds.cast_column("image", datasets.Image()) if as_feature else ds


@pytest.mark.parametrize("kind", ["pil", "image-files", "paths"])
def test_sampler_batches_read_back_as_caption_image_pairs(kind, tmp_path):
    source = pil_dataset() if kind == "pil" else file_dataset(tmp_path, as_feature=kind == "image-files")
    ds = load_parallel(source)
    assert is_image_dataset(ds) and len(ds) == N_GROUPS * len(LANGS) + 1  # + the marker row
    for alpha in (1.0, 0.0):
        sampler = HybridBatchSampler(ds, batch_size=4, drop_last=True, seed=5, alpha=alpha)
        mixed = 0
        for (kind_, _), keys in zip(sampler.batches(), sampler):
            items = ds.__getitems__(keys)
            captions = [WORDS.index(item["anchor"].split()[-1]) for item in items]
            assert captions == [group_of(item["positive"]) for item in items]
            assert len(set(captions)) == 4
            langs = {item["anchor"].split()[0] for item in items}
            assert kind_ == ("X-X" if alpha == 1.0 else "X-Y") and (len(langs) == 1 or kind_ == "X-Y")
            mixed += len(langs) > 1
        assert (mixed > 0) == (alpha == 0.0)
    plain = ds[4]  # plain row access (the model card's): the row's caption and its decoded image
    assert plain["query"] == "en quick" and group_of(plain["passage"]) == 1
    assert IMAGE_DATA_COLUMN not in plain


def test_images_are_decoded_per_batch_only_passages(monkeypatch):
    source = pil_dataset()
    decoded = []
    real_load = ImageFile.ImageFile.load  # the pixel decoder of images read from bytes or files

    def counting_load(self):
        if self._im is None:  # not decoded yet
            decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    ds = load_parallel(source)
    assert decoded == [], "building the dataset checks images without decoding their pixels"
    sampler = HybridBatchSampler(ds, batch_size=4, drop_last=True, seed=1, alpha=0.0)
    keys = next(iter(sampler))
    items = ds.__getitems__(keys)
    assert len(items) == 4 and len(decoded) == 4, "only the batch's 4 passage images are decoded"


def test_one_trainer_step_through_train_hybrid(tmp_path):
    from mlret_plugin.training.run import train_hybrid

    torch.manual_seed(0)
    text = tiny_sentence_transformer("bert", tmp_path / "tiny")
    model = build_dual_encoder(text, 16, TinyImageEncoder(16, image_size=16))
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    out = train_hybrid(model, load_parallel(pil_dataset()), tmp_path / "run", alpha=0.5, batch_size=4, max_steps=1,
                       save_steps=100, show_progress=False, learning_rate=1e-2, warmup_ratio=0.0)
    assert (out / "modules.json").is_file()
    after = [p for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), "one optimiser step changed the weights"


def test_languages_keep_rows_and_errors_name_the_source_row():
    data = columns([picture(g) for g in range(N_GROUPS)])
    data["image"][7] = picture(5)  # row 7 = group g2 in en (de/es of g2 have picture(2))
    source = datasets.Dataset.from_dict(data)
    with pytest.raises(ValueError, match=r"dataset: row 7 \(group 'g2', lang 'en'\): group 'g2' already has another "
                                         r"image \(row 6: stored in the dataset"):
        load_parallel(source)
    kept = load_parallel(source, languages=["de", "es"])  # without the en rows the groups are consistent
    assert len(kept) == N_GROUPS * 2 + 1 and set(kept.with_format(None)["lang"]) == {"de", "es"}
    with pytest.raises(ValueError, match=r"dataset: row 8 \(group 'g2', lang 'es'\): .*\(row 7: "):
        load_parallel(source, languages=["en", "es"])  # row numbers are the source's, not the filtered rows'


def test_unreadable_image_names_the_row():
    data = columns([picture(g) for g in range(N_GROUPS)])
    data["image"][10] = {"bytes": b"not an image at all", "path": "broken.png"}
    features = datasets.Features({"group_id": datasets.Value("string"), "lang": datasets.Value("string"),
                                  "query": datasets.Value("string"), "image": datasets.Image(),
                                  "source": datasets.Value("string")})
    data["image"] = [datasets.Image().encode_example(im) if isinstance(im, Image.Image) else im for im in data["image"]]
    source = datasets.Dataset.from_dict(data, features=features)
    with pytest.raises(ValueError, match=r"dataset: row 10 \(group 'g3', lang 'en'\): image stored in the dataset "
                                         r"'broken.png' \(19 bytes\) is not a readable image"):
        load_parallel(source)


def test_missing_and_deleted_image_files_name_the_row(tmp_path):
    source = file_dataset(tmp_path)
    (tmp_path / "img6.png").rename(tmp_path / "moved.png")
    with pytest.raises(FileNotFoundError, match=r"dataset: row 18 \(group 'g6', lang 'de'\): image file .*img6.png "
                                                r"does not exist"):
        load_parallel(source)
    (tmp_path / "moved.png").rename(tmp_path / "img6.png")
    ds = load_parallel(source)
    (tmp_path / "img6.png").unlink()  # removed after building: fails when its batch is read, naming the row
    ds.__getitems__([0, 1])
    with pytest.raises(FileNotFoundError, match=r"dataset: row 19 \(group 'g6', lang 'en'\).*img6.png does not exist"):
        ds.__getitems__([19])


@pytest.mark.parametrize("change,error", [
    (lambda d: d.pop("query"), r"dataset: missing column\(s\) \['query'\]"),
    (lambda d: d.update(passage=["x"] * len(d["lang"])), r"column\(s\) \['passage'\].*take 'image' as the passage"),
    (lambda d: d.update(image=[7] * len(d["lang"])), r"column 'image' has feature .*expected a datasets.Image"),
    (lambda d: d["query"].__setitem__(3, ""), r"dataset: row 3 \(group 'g1', lang 'de'\): missing or empty \['query'\]"),
    (lambda d: d["lang"].__setitem__(1, "de"), r"\(group_id, lang\) pair\(s\) appear more than once"),
])
def test_bad_datasets(change, error):
    data = columns([picture(g) for g in range(N_GROUPS)])
    change(data)
    with pytest.raises(ValueError, match=error):
        load_parallel(datasets.Dataset.from_dict(data))
