"""se_zoo.data: Fashion-MNIST from its IDX files; ImageFolder directories listed (never read) when built, an
unreadable image named or skipped when read, or found up front; the photo batch of the equivalence checks."""
import gzip
import io

import pytest
import torch
from PIL import Image

from se_zoo import data as se_data


def _jpeg_bytes(photo: Image.Image, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    photo.resize((size, size)).save(buffer, format='JPEG', quality=90)
    return buffer.getvalue()


def test_building_the_datasets_of_a_20k_image_folder_decodes_no_image(tmp_path, photos, monkeypatch):
    jpeg = _jpeg_bytes(photos[0])
    for split, per_class in (('train', 1000), ('val', 20)):
        for c in range(20):
            folder = tmp_path / split / f'class{c:02d}'
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f'{i}.jpg').write_bytes(jpeg)
    opened = []
    original_open = Image.open
    monkeypatch.setattr(Image, 'open', lambda *a, **k: opened.append(a[0]) or original_open(*a, **k))

    train, evaluation, classes = se_data.create_datasets(tmp_path)
    assert len(train) == 20_000 and len(evaluation) == 400 and len(classes) == 20
    assert opened == []  # listed, not read
    image, target = train[1234]  # the counter does see a read
    assert len(opened) == 1 and image.size == (16, 16) and classes[target] == 'class01'


def test_an_unreadable_image_is_named_when_read(tmp_path, image_folder):
    root = image_folder(tmp_path / 'data', suffix='.jpg')
    path = root / 'train' / 'cup' / '1.jpg'
    # A JPEG cut short passes PIL's open (and verify()); it fails only when its pixels are decoded.
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    train = se_data.ImageFolder(root / 'train')  # built without reading
    index = train.paths().index(str(path))
    with pytest.raises(ValueError, match=f'cannot read image {path}'):
        train[index]


def test_skip_unreadable_yields_a_marker_that_the_batch_leaves_out(tmp_path, image_folder):
    root = image_folder(tmp_path / 'data', suffix='.png')
    bad = root / 'train' / 'cat' / '2.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n not a png')
    train = se_data.ImageFolder(root / 'train', skip_unreadable=True)
    transformed = se_data.TransformedDataset(train, lambda img: torch.ones(3, 4, 4))
    batch = [transformed[i] for i in range(len(transformed))]
    marker = [img for img, _ in batch if isinstance(img, se_data.UnreadableImage)]
    assert [m.path for m in marker] == [str(bad)] and marker[0].error
    images, targets, unreadable = se_data.collate_readable(batch)
    assert images.shape == (5, 3, 4, 4) and targets.tolist() == [0, 0, 1, 1, 1]
    assert unreadable == marker
    assert se_data.collate_readable(batch[2:3]) == (None, None, marker)


@pytest.mark.parametrize('workers', [0, 2])
def test_find_unreadable_images_finds_exactly_the_broken_files(tmp_path, image_folder, workers):
    root = image_folder(tmp_path / 'data', suffix='.jpg')
    truncated, garbage = root / 'train' / 'cup' / '0.jpg', root / 'val' / 'cat' / '1.jpg'
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage.write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
    train, evaluation, _ = se_data.create_datasets(root, eval_samples=5)
    paths = se_data.dataset_image_paths(train) + se_data.dataset_image_paths(evaluation)
    assert len(paths) == 11
    found = se_data.find_unreadable_images(paths, workers=workers)
    assert sorted(found) == sorted(p for p in map(str, (truncated, garbage)) if p in paths)
    assert all(found.values())


def test_folder_layout_errors_name_the_folder(tmp_path, image_folder):
    root = image_folder(tmp_path / 'data')
    (root / 'val' / 'dog').mkdir()
    with pytest.raises(ValueError, match=f'class folder {root / "val" / "dog"} holds no images'):
        se_data.create_datasets(root)
    (root / 'val' / 'dog' / 'a.png').write_bytes((root / 'val' / 'cat' / '0.png').read_bytes())
    with pytest.raises(ValueError, match='class folders the training split lacks: dog'):
        se_data.create_datasets(root)


def test_photo_batch_follows_the_cfg_and_its_channels():
    cfg = {'input_size': (1, 32, 32), 'mean': (0.5,), 'std': (0.5,), 'crop_pct': 1.0, 'interpolation': 'bilinear'}
    grey = se_data.photo_batch(cfg)
    assert grey.shape == (4, 1, 32, 32) and -1 <= grey.min() < grey.max() <= 1
    rgb = se_data.photo_batch(None, size=48)  # timm's defaults: ImageNet normalisation
    assert rgb.shape == (4, 3, 48, 48) and rgb.min() < -1.5
    assert not torch.equal(rgb[0], rgb[1])  # four different photos


def test_fashion_mnist_reads_real_images_and_labels():
    test = se_data.FashionMNIST('test', num_samples=100)
    image, label = test[0]
    assert image.size == (28, 28) and image.mode == 'RGB'
    assert 0 <= label < 10 and len(set(int(t) for t in test.targets)) == 10  # all classes in the first 100


def test_idx_reader_rejects_a_truncated_file(tmp_path):
    path = tmp_path / 'x-idx3-ubyte.gz'
    header = (2051).to_bytes(4, 'big') + b''.join(n.to_bytes(4, 'big') for n in (2, 28, 28))
    path.write_bytes(gzip.compress(header + bytes(28 * 28)))
    with pytest.raises(ValueError, match='truncated'):
        se_data.read_idx(path)
    path.write_bytes(gzip.compress(header + bytes(2 * 28 * 28)))
    assert se_data.read_idx(path).shape == (2, 28, 28)
