"""se_zoo.data: Fashion-MNIST from its IDX files and ImageFolder directories checked up front, with the file named."""
import gzip

import pytest

from se_zoo import data as se_data


def test_truncated_image_is_reported_with_its_name(tmp_path, image_folder):
    root = image_folder(tmp_path / 'data')
    path = root / 'train' / 'cat' / '0.png'
    # A PNG cut inside its pixel data may pass PIL's header check; decoding it must still name the file.
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=f'cannot read image .*{path.name}'):
        train, _, _ = se_data.create_datasets(str(root))
        for i in range(len(train)):
            train[i]


def test_a_truncated_jpeg_is_refused_up_front_with_its_name(tmp_path, image_folder):
    """A JPEG cut short passes PIL's verify(); the folder check decodes it, so the dataset is never built."""
    root = image_folder(tmp_path / 'data', suffix='.jpg')
    path = root / 'train' / 'cup' / '1.jpg'
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match=f'cannot read image {path}'):
        se_data.ImageFolder(root / 'train')


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
