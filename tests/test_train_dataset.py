"""Training datasets: every bad dataset is a one-line error (exit 2) before any weights load or step runs."""

import os

from PIL import Image

from localflux.train.config import load_train_config
from localflux.train.dataset import DataOrder, bucket_for, load_image, pixels_for_bucket, scan_dataset

from _train_helpers import make_subject, write_config


def _fails_before_training(run_cli, tmp_path, config, *sets, match):
    args = ["train-lora", "--config", config, "--no-progress"]
    for option in sets:
        args += ["--set", option]
    code, out, err = run_cli(*args)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("localflux: error:"), err
    assert match in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    # nothing was cached or trained: the model was never loaded
    assert not (tmp_path / "run").exists()
    return lines[0]


def test_empty_folder(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    config = write_config(tmp_path, folder=tmp_path / "empty")
    _fails_before_training(run_cli, tmp_path, config, match="has no images")


def test_missing_folder(run_cli, tmp_path):
    config = write_config(tmp_path, folder=tmp_path / "nowhere")
    _fails_before_training(run_cli, tmp_path, config, match="does not exist")


def test_corrupt_image_is_named(run_cli, tmp_path):
    data = make_subject(tmp_path / "data")
    good = (data / "img1.png").read_bytes()
    (data / "img1.png").write_bytes(good[: len(good) // 2])  # truncated
    line = _fails_before_training(run_cli, tmp_path, write_config(tmp_path, folder=data), match="img1.png")
    assert "not a readable image" in line


def test_caption_without_image(run_cli, tmp_path):
    data = make_subject(tmp_path / "data")
    (data / "lost.txt").write_text("photo of [trigger]")
    _fails_before_training(run_cli, tmp_path, write_config(tmp_path, folder=data), match="lost.txt' has no image")


def test_unreadable_file(run_cli, tmp_path):
    data = make_subject(tmp_path / "data")
    os.symlink(tmp_path / "gone.png", data / "img9.png")  # unreadable even for root, unlike chmod 000
    line = _fails_before_training(run_cli, tmp_path, write_config(tmp_path, folder=data), match="img9.png")
    assert "cannot read" in line


def test_unsupported_file(run_cli, tmp_path):
    data = make_subject(tmp_path / "data")
    (data / "notes.pdf").write_bytes(b"%PDF-1.4")
    _fails_before_training(run_cli, tmp_path, write_config(tmp_path, folder=data), match="notes.pdf")


def test_bucket_not_multiple_of_16(run_cli, tmp_path):
    _fails_before_training(run_cli, tmp_path, write_config(tmp_path), "dataset.resolutions=[72]",
                           match="not a multiple of 16")


def test_trigger_missing(run_cli, tmp_path):
    _fails_before_training(run_cli, tmp_path, write_config(tmp_path), 'dataset.trigger=""',
                           match="dataset.trigger is empty")


def test_caption_without_the_trigger(run_cli, tmp_path):
    data = make_subject(tmp_path / "data")
    (data / "img2.txt").write_text("an orange square")
    _fails_before_training(run_cli, tmp_path, write_config(tmp_path, folder=data),
                           match="img2.txt' mentions neither [trigger] nor 'zqx'")


def test_captions_template_and_trigger(tmp_path):
    data = make_subject(tmp_path / "data")
    (data / "img0.txt").write_text("[trigger] on a table\n")
    config = load_train_config(write_config(tmp_path, folder=data))
    dataset = scan_dataset(config.dataset)
    captions = {s.path.name: s.caption for s in dataset.samples}
    assert captions["img0.png"] == "zqx on a table" and captions["img1.png"] == "photo of zqx"


def test_dataset_hash_covers_bytes_captions_and_trigger(tmp_path):
    data = make_subject(tmp_path / "data")
    config = load_train_config(write_config(tmp_path, folder=data))
    first = scan_dataset(config.dataset).sha256
    assert scan_dataset(config.dataset).sha256 == first
    other_trigger = load_train_config(write_config(tmp_path, folder=data), sets=['dataset.trigger="qqv"'])
    assert scan_dataset(other_trigger.dataset).sha256 != first
    (data / "img0.txt").write_text("a photo of [trigger]")
    second = scan_dataset(config.dataset).sha256
    assert second != first
    Image.new("RGB", (64, 64), "red").save(data / "img3.png")
    assert scan_dataset(config.dataset).sha256 not in (first, second)


def test_exif_orientation_and_modes(tmp_path):
    # EXIF orientation 6: stored 40x20, shown rotated to 20x40
    image = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # fully transparent -> white
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert load_image(tmp_path / "cmyk.jpg").mode == "RGB"
    Image.new("L", (8, 8), 128).save(tmp_path / "gray.png")
    assert load_image(tmp_path / "gray.png").getpixel((0, 0)) == (128, 128, 128)


def test_buckets_keep_aspect_without_square_crops(tmp_path):
    assert bucket_for(64, 64, 64) == (64, 64)
    assert bucket_for(100, 50, 64) == (96, 48)
    assert bucket_for(768, 1024, 512) == (448, 592)
    for w, h in ((100, 50), (37, 91), (1024, 768)):
        bw, bh = bucket_for(w, h, 512)
        assert bw % 16 == 0 and bh % 16 == 0 and abs(bw / bh - w / h) / (w / h) < 0.1
    Image.new("RGB", (100, 50), "white").save(tmp_path / "wide.png")
    assert tuple(pixels_for_bucket(tmp_path / "wide.png", (96, 48)).shape) == (3, 48, 96)


def test_data_order_is_a_function_of_seed_and_position(tmp_path):
    data = make_subject(tmp_path / "data")
    Image.new("RGB", (128, 64), "white").save(data / "wide.png")
    (data / "wide.txt").write_text("[trigger] wide")
    config = load_train_config(write_config(tmp_path, folder=data))
    items = scan_dataset(config.dataset).items
    order = DataOrder(items, global_batch=3, seed=5)
    stream = [order.next() for _ in range(7)]
    for batch in stream:  # one bucket per batch, topped up to the global batch
        assert len(batch) == 3 and len({items[i].bucket for i in batch}) == 1
    again = DataOrder(items, global_batch=3, seed=5)
    again.seek({"epoch": 1, "index": 1})
    assert again.next() == stream[order.batches_per_epoch + 1]
    assert [DataOrder(items, 3, 6).next() for _ in range(4)] != stream[:4]
