"""se_zoo.finetune / se-zoo finetune: learning on real Fashion-MNIST, resume, seeding, DDP, checkpoints, bad input."""
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.scheduler.scheduler import Scheduler

from se_zoo import data as se_data
from se_zoo_cli import main
from se_zoo.finetune import SCHEDULERS, FinetuneConfig, finetune
from se_zoo.finetune.trainer import create_schedule

# One pytest-xdist worker runs the module (--dist loadgroup): the fine-tune that ``trained`` makes runs once.
pytestmark = pytest.mark.xdist_group('finetune')

# A narrow SE-ResNet-18 at Fashion-MNIST's own 28 px: big enough to learn, small enough for 2 CPU cores.
TINY = dict(model_kwargs=dict(channels=(8, 16, 32, 64), stem_width=8), img_size=28)
TINY_CLI = ['--model-kwargs', 'channels=(8,16,32,64)', 'stem_width=8', '--img-size', '28']


def _state(folder: Path):
    return load_file(str(folder / 'model.safetensors'))


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One short real fine-tune shared by the tests that need a trained model."""
    output = tmp_path_factory.mktemp('trained') / 'run'
    result = finetune('se_resnet18', 'fashion-mnist', output=str(output), epochs=2, batch_size=32, lr=5e-3,
                      scale=(1., 1.), train_samples=1000, eval_samples=300, workers=0, progress=False, **TINY)
    return result


def test_short_finetune_learns_fashion_mnist(trained):
    # 10 classes: chance is 10%. 1,000 real images for two epochs get far above it.
    assert trained.history[-1].eval_samples == 300
    assert trained.best_accuracy >= 50, [h.eval_accuracy for h in trained.history]
    assert trained.history[-1].train_loss < trained.history[0].train_loss


def test_best_checkpoint_is_a_publish_ready_folder_timm_loads(trained):
    best = trained.best_dir
    assert sorted(p.name for p in best.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((best / 'config.json').read_text())
    assert config['architecture'] == 'se_resnet18'
    assert config['pretrained_cfg']['label_names'][0] == 'T-shirt/top'
    assert config['pretrained_cfg']['input_size'] == [3, 28, 28]
    card = (best / 'README.md').read_text()
    assert f'value: {round(trained.best_accuracy, 2)}' in card and 'fashion_mnist' in card
    # timm rebuilds it from the folder alone, and it predicts what the trained model predicts.
    loaded = timm.create_model(f'local-dir:{best}', pretrained=True).eval()
    model = trained.model.eval()
    model.load_state_dict(_state(best))
    x = torch.randn(4, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # last/ holds the resumable state next to the same three files, and no temporary folder is left.
    assert {'training_state.json', 'training_state.safetensors'} <= {p.name for p in trained.last_dir.iterdir()}
    assert sorted(p.name for p in trained.last_dir.parent.iterdir()) == ['best', 'last']


def test_a_folder_is_a_model_and_init_folders_bring_their_keywords(tmp_path, trained):
    short = dict(epochs=1, batch_size=32, train_samples=64, eval_samples=32, workers=0, progress=False, img_size=28)
    # The folder as the model: its architecture, keywords and weights come from config.json and model.safetensors.
    from_folder = finetune(str(trained.best_dir), output=str(tmp_path / 'folder'), lr=1e-9, **short)
    assert from_folder.model.layer1[0].conv1.out_channels == 8  # the narrow network of the trained model
    assert torch.allclose(from_folder.model.conv1.weight, _state(trained.best_dir)['conv1.weight'], atol=1e-6)
    # --init FOLDER without --model-kwargs: the folder's config.json keywords rebuild the narrow network
    from_init = finetune('se_resnet18', init=str(trained.best_dir), output=str(tmp_path / 'init'), **short)
    assert from_init.model.layer4[0].conv1.out_channels == 64


def test_a_finetune_folder_loads_in_transformers_with_its_class_names(trained):
    from transformers import AutoModelForImageClassification, pipeline
    best = str(trained.best_dir)
    images = [se_data.FashionMNIST('test', num_samples=4)[i][0] for i in range(4)]
    timm_model = timm.create_model(f'local-dir:{best}', pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(timm_model))
    x = torch.stack([transform(img) for img in images])
    wrapped = AutoModelForImageClassification.from_pretrained(best).eval()
    with torch.no_grad():
        assert torch.equal(wrapped(pixel_values=x).logits, timm_model(x))
    assert wrapped.config.id2label[0] == 'T-shirt/top'
    predictions = pipeline('image-classification', model=best)(images[0], top_k=3)
    assert len(predictions) == 3 and all(p['label'] in se_data.FASHION_MNIST_CLASSES for p in predictions)
    assert predictions[0]['label'] == se_data.FASHION_MNIST_CLASSES[int(timm_model(x[:1]).argmax())]


def test_resumed_run_equals_uninterrupted_and_seed_repeats(tmp_path):
    # workers=2: augmentation runs in worker processes, whose seeds must follow the run's seed as well.
    options = dict(epochs=2, batch_size=32, train_samples=256, eval_samples=64, workers=2, progress=False,
                   seed=7, **TINY)
    first_epoch = {}

    def snapshot(stats):
        if stats.epoch == 0:
            first_epoch.update(_state(tmp_path / 'full' / 'last'))

    def interrupt(stats):
        raise KeyboardInterrupt  # as Ctrl-C right after the first epoch's checkpoint

    full = finetune('se_resnet18', output=str(tmp_path / 'full'), on_epoch_end=snapshot, **options)
    with pytest.raises(KeyboardInterrupt):
        finetune('se_resnet18', output=str(tmp_path / 'split'), on_epoch_end=interrupt, **options)
    assert json.loads((tmp_path / 'split' / 'last' / 'training_state.json').read_text())['epoch'] == 1
    # Same seed, same result: the second run's first epoch is the first run's, bit for bit.
    _assert_same_weights(first_epoch, _state(tmp_path / 'split' / 'last'))

    resumed = finetune('se_resnet18', output=str(tmp_path / 'split'), resume=True, **options)
    _assert_same_weights(_state(tmp_path / 'full' / 'last'), _state(tmp_path / 'split' / 'last'))
    assert [(h.train_loss, h.eval_accuracy) for h in resumed.history] == \
        [(h.train_loss, h.eval_accuracy) for h in full.history]

    other = finetune('se_resnet18', output=str(tmp_path / 'seed8'), **dict(options, seed=8))
    assert not torch.equal(other.model.state_dict()['fc.weight'], full.model.state_dict()['fc.weight'])


def test_resume_from_the_output_alone_equals_the_uninterrupted_run(tmp_path, capsys):
    recipe = ['se_resnet18', *TINY_CLI, '--epochs', '2', '--batch-size', '32', '--train-samples', '128',
              '--eval-samples', '64', '--workers', '0', '--no-progress', '--seed', '3']
    assert main(['finetune', *recipe, '--output', str(tmp_path / 'full')]) == 0
    # the same recipe, stopped after its first epoch's checkpoint
    with pytest.raises(KeyboardInterrupt):
        finetune('se_resnet18', output=str(tmp_path / 'cut'), epochs=2, batch_size=32, train_samples=128,
                 eval_samples=64, workers=0, progress=False, seed=3, **TINY, on_epoch_end=_interrupt_after_first)
    capsys.readouterr()
    assert main(['finetune', '--output', str(tmp_path / 'cut'), '--resume', '--no-progress']) == 0
    assert 'test accuracy' in capsys.readouterr().out
    _assert_same_weights(_state(tmp_path / 'full' / 'last'), _state(tmp_path / 'cut' / 'last'))


def _interrupt_after_first(stats) -> None:
    if stats.epoch == 0:
        raise KeyboardInterrupt  # as Ctrl-C right after the first epoch's checkpoint


def test_a_finished_run_extends_to_more_epochs(tmp_path, capsys):
    options = dict(batch_size=32, train_samples=128, eval_samples=64, workers=0, progress=False, seed=5, lr=3e-3,
                   **TINY)
    # Started as the Quick start starts its run, with overwrite: the resume must not inherit that flag.
    done = finetune('se_resnet18', output=str(tmp_path / 'run'), epochs=1, overwrite=True, **options)
    after_one = _state(done.last_dir)
    assert main(['finetune', '--output', str(tmp_path / 'run'), '--resume', '--epochs', '2', '--no-progress']) == 0
    assert 'after 2 epochs' in capsys.readouterr().out
    state = json.loads((tmp_path / 'run' / 'last' / 'training_state.json').read_text())
    assert state['epoch'] == 2 and len(state['history']) == 2 and state['config']['epochs'] == 2
    assert state['history'][0] == json.loads(json.dumps(done.history[0].__dict__))  # epoch 1 kept, not redone
    assert state['config']['lr'] == 3e-3 and state['config']['seed'] == 5  # the rest of its recipe
    extended = _state(tmp_path / 'run' / 'last')
    assert not torch.equal(extended['fc.weight'], after_one['fc.weight'])
    # the optimizer continued: its step count is that of two epochs
    tensors = load_file(str(tmp_path / 'run' / 'last' / 'training_state.safetensors'))
    steps = [v for k, v in tensors.items() if k.endswith('.step')]
    assert steps and all(int(v) == 2 * 4 for v in steps)  # 128 images / 32 per batch = 4 steps per epoch
    with pytest.raises(ValueError, match='has done 2 epochs'):
        finetune(output=str(tmp_path / 'run'), resume=True, epochs=1)


def test_resume_refuses_a_changed_recipe_and_a_fresh_run_refuses_to_overwrite(tmp_path, trained):
    output = str(trained.last_dir.parent)
    with pytest.raises(ValueError, match='already holds a checkpoint'):
        finetune('se_resnet18', output=output, epochs=2, **TINY)
    with pytest.raises(ValueError, match=r'different .*lr'):
        finetune('se_resnet18', output=output, resume=True, epochs=2, batch_size=32, lr=1e-2, scale=(1., 1.),
                 train_samples=1000, eval_samples=300, workers=0, progress=False, **TINY)
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
        finetune('se_resnet18', output=str(tmp_path / 'empty'), resume=True, **TINY)
    with pytest.raises(ValueError, match='either resume=True .* or overwrite=True'):
        finetune(output=output, resume=True, overwrite=True)


def test_two_process_gloo_ddp_through_torchrun(tmp_path):
    output = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
           '-m', 'se_zoo_cli', 'finetune', 'se_resnet18', *TINY_CLI, '--epochs', '1', '--batch-size', '16',
           '--train-samples', '96', '--eval-samples', '40', '--workers', '0', '--device', 'cpu',
           '--output', str(output)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((output / 'last' / 'training_state.json').read_text())
    assert meta['world_size'] == 2
    assert meta['global_batch_size'] == 32
    assert meta['steps_per_epoch'] == 3  # 96 images / (2 processes x 16)
    assert meta['history'][0]['train_samples'] == 96  # each image once, across the two processes
    assert meta['history'][0]['eval_samples'] == 40
    assert proc.stdout.count('test accuracy:') == 1  # only rank 0 reports


# ---- bad input: a clear error, and nothing written ------------------------------------------------------------

def _fails(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    return err


def test_image_folder_trains(tmp_path, image_folder):
    root = image_folder(tmp_path / 'data')
    result = finetune('se_resnet18', str(root), output=str(tmp_path / 'out'), epochs=1, batch_size=4, workers=0,
                      progress=False, **TINY)
    assert result.history[0].train_samples == 6 and result.history[0].eval_samples == 6
    config = json.loads((result.best_dir / 'config.json').read_text())
    assert config['num_classes'] == 2 and config['pretrained_cfg']['label_names'] == ['cat', 'cup']


def test_missing_dataset_dir(tmp_path, capsys):
    out = tmp_path / 'out'
    _fails(capsys, ['finetune', 'se_resnet18', '--data', str(tmp_path / 'nope'), '--output', str(out)],
           f'dataset directory {tmp_path / "nope"} does not exist')
    assert not out.exists()


def test_empty_class_folder(tmp_path, image_folder, capsys):
    root = image_folder(tmp_path / 'data')
    (root / 'train' / 'empty').mkdir()
    out = tmp_path / 'out'
    _fails(capsys, ['finetune', 'se_resnet18', '--data', str(root), '--output', str(out)],
           f'class folder {root / "train" / "empty"} holds no images')
    assert not out.exists()


def _folder_with_unreadable_images(root: Path, photos, broken: int, per_class: int = 24, val_per_class: int = 8):
    """Two classes of 16 px JPEG crops of two photos (64 images by default), ``broken`` of them unreadable."""
    crops = {}
    for c, name in enumerate(('cat', 'cup')):
        for i in range(4):  # a few different crops per class, so that there is something to learn
            buffer = io.BytesIO()
            photos[c].crop((40 * i, 0, 40 * i + 200, 200)).resize((16, 16)).save(buffer, format='JPEG')
            crops[name, i] = buffer.getvalue()
    paths = {'train': [], 'val': []}
    for split, n in (('train', per_class), ('val', val_per_class)):
        for name in ('cat', 'cup'):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                path = root / split / name / f'{i}.jpg'
                path.write_bytes(crops[name, i % 4])
                paths[split].append(path)
    # spread over both splits and both kinds of damage: a truncated JPEG decodes only in part, garbage not at all
    bad = [paths['val' if k % 2 == 0 else 'train'][(3 + 5 * k) % (2 * val_per_class)] for k in range(broken)]
    for k, path in enumerate(bad):
        path.write_bytes(path.read_bytes()[:100] if k % 2 else b'\xff\xd8\xff\xe0 not a jpeg')
    return sorted(map(str, bad))


SMALL = dict(model_kwargs=TINY['model_kwargs'], img_size=16, epochs=1, batch_size=16)
SMALL_CLI = [*TINY_CLI[:-1], '16', '--epochs', '1', '--batch-size', '16']


def test_a_run_skips_unreadable_images_names_them_and_finishes(tmp_path, photos, capsys, caplog):
    bad = _folder_with_unreadable_images(tmp_path / 'data', photos, broken=3)  # 3 of 64
    assert len(bad) == 3 and any('/val/' in p for p in bad) and any('/train/' in p for p in bad)
    # workers=2: the images are read in worker processes, and their names must still reach the run
    result = finetune('se_resnet18', str(tmp_path / 'data'), output=str(tmp_path / 'out'), workers=2,
                      max_unreadable=0.05, **SMALL)
    assert sorted(result.unreadable) == bad and all(result.unreadable.values())  # each with its error
    stats = result.history[0]
    assert stats.skipped == 3 and stats.train_samples + stats.eval_samples == 64 - 3
    assert np.isfinite(result.final_accuracy) and 0 <= result.final_accuracy <= 100
    assert 'skipped 3 unreadable' in capsys.readouterr().out  # the epoch line
    logged = [r.getMessage() for r in caplog.records if 'unreadable image' in r.getMessage()]
    assert len(logged) == 3 and all(sum(p in m for m in logged) == 1 for p in bad)  # each named once
    state = json.loads((tmp_path / 'out' / 'last' / 'training_state.json').read_text())
    assert sorted(state['unreadable']) == bad and state['history'][0]['skipped'] == 3


def test_a_run_stops_once_unreadable_images_pass_the_threshold(tmp_path, photos, capsys):
    bad = _folder_with_unreadable_images(tmp_path / 'data', photos, broken=6)  # 6 of 64, past the default 1 %
    args = ['finetune', 'se_resnet18', '--data', str(tmp_path / 'data'), *SMALL_CLI, '--workers', '0', '--no-progress']
    # met while training: the run stops at the first batch past the share, before any checkpoint, naming them
    err = _fails(capsys, [*args, '--output', str(tmp_path / 'out')], 'are unreadable, more than max_unreadable=0.01')
    named = re.findall(r'\S+\.jpg', err.strip().splitlines()[-1])
    assert named and set(named) <= set(bad)
    assert not (tmp_path / 'out').exists()
    # found up front by --check-images: all six, in one line, before anything is built
    err = _fails(capsys, [*args, '--check-images', '--output', str(tmp_path / 'out')],
                 '6 of its 64 images (9.38%) are unreadable')
    assert all(p in err for p in bad[:3]) and 'and 3 more' in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'out').exists()
    # a higher threshold lets the run finish; the summary names them
    assert main([*args, '--check-images', '--max-unreadable', '0.1', '--output', str(tmp_path / 'more')]) == 0
    assert f'skipped 6 unreadable images: {", ".join(bad[:3])} and 3 more' in capsys.readouterr().out


def test_unknown_model(tmp_path, capsys):
    out = tmp_path / 'out'
    _fails(capsys, ['finetune', 'se_resnet9', '--output', str(out)], "'se_resnet9' is neither a model")
    assert not out.exists()


def test_fashion_mnist_not_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(se_data, 'FASHION_MNIST_ROOT', tmp_path / 'no-datasets')
    out = tmp_path / 'out'
    _fails(capsys, ['finetune', 'se_resnet18', '--output', str(out)], 'apt-get install dataset-fashion-mnist')
    assert not out.exists()


# ---- retrofit through finetune, and the inspect command -------------------------------------------------------

def test_add_se_retrofits_a_plain_checkpoint_before_training(tmp_path, trained):
    plain = finetune('resnet18', output=str(tmp_path / 'plain'), epochs=1, batch_size=32, train_samples=64,
                     eval_samples=32, workers=0, progress=False, **TINY)
    result = finetune('resnet18', output=str(tmp_path / 'se'), init=str(plain.best_dir), add_se=True,
                      se_kwargs={'r': 4}, epochs=1, batch_size=32, train_samples=64, eval_samples=32, workers=0,
                      progress=False, **TINY)
    state = _state(result.last_dir)
    se_keys = [k for k in state if '.se.fc' in k]
    assert len(se_keys) == 8 * 4  # 8 blocks x fc1/fc2 weight and bias
    assert 'add_se' in (result.best_dir / 'README.md').read_text()
    # A retrofitted timm ResNet is an se_zoo se_resnet18 tensor for tensor: the folder loads back by that name.
    config = json.loads((result.best_dir / 'config.json').read_text())
    assert config['architecture'] == 'se_resnet18' and config['model_args']['r'] == 4
    loaded = timm.create_model(f'local-dir:{result.best_dir}', pretrained=True).eval()
    model = result.model.eval()
    model.load_state_dict(_state(result.best_dir))
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # It continued from the plain weights: the stem conv moved only by one epoch of fine-tuning.
    start = _state(plain.best_dir)['conv1.weight']
    assert (state['conv1.weight'] - start).abs().max() < start.abs().max()


def test_inspect_plots_per_class_excitations(tmp_path, trained, capsys):
    png = tmp_path / 'excitations.png'
    assert main(['inspect', str(trained.best_dir), '--out', str(png), '--samples', '200', '--blocks', '4']) == 0
    assert f'wrote {png}' in capsys.readouterr().out
    with Image.open(png) as img:
        assert img.format == 'PNG' and img.width > 400
        assert len(np.unique(np.asarray(img.convert('L')))) > 16  # curves, not a blank canvas


@pytest.mark.parametrize('name', SCHEDULERS)
def test_every_accepted_schedule_is_one_timm_builds(name):
    # The list is kept by hand (timm keeps none): each name must build, through the trainer's own
    # create_schedule, a scheduler the trainer can step (rsqrt decays on the warmup's timescale: it needs one).
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    config = FinetuneConfig('se_resnet18', sched=name, epochs=4, warmup_epochs=int(name == 'rsqrt'))
    scheduler = create_schedule(optimizer, config, updates_per_epoch=3)
    assert isinstance(scheduler, Scheduler)
    for step in range(1, 4 * 3 + 1):
        scheduler.step_update(num_updates=step)
        assert 0 <= optimizer.param_groups[0]['lr'] <= 0.1 + 1e-12
