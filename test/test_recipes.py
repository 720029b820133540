"""The recipes (`make demo`, `make train-orl`, `make train-lfw`), run end to end at a tiny scale.

The full runs take 7, 5 and 25 minutes; here the same script runs each recipe for a couple
of steps, so every stage (generate or convert, train, validate, evaluate) is exercised for
real, on the real faces where the recipe has them.
"""
import json
import os
import pickle
import subprocess
import sys

import pytest

from data import eval_data_reader
from data.manifest import load_manifest

from conftest import PROJECT_ROOT  # noqa: E402


def run_recipe(recipe, env_overrides):
    env = dict(os.environ, PYTHON=sys.executable, **env_overrides)
    return subprocess.run(['bash', os.path.join('tools', 'recipe.sh'), recipe], cwd=PROJECT_ROOT,
                          env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600)


def test_demo_script_generates_trains_validates_and_evaluates(tmp_path):
    """...and moves an earlier run in its output folder aside instead of deleting it. On two
    TensorFlow workers (DEMO_WORKERS=2: each with half the batch of 64, one shared checkpoint
    folder where Partial FC's blocks are merged, rank 0 validating); the real-face recipes
    below run on one."""
    out = tmp_path / 'demo'
    earlier = ['ckpt/InsightFace_iter_9.ckpt.index', 'summary/events', 'logs/train.log',
               'eval_final.json', 'eval_best.json', 'roc/roc_lfw.png']
    for name in earlier:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text('earlier run: ' + name)
    result = run_recipe('demo', {'DEMO_DATA': str(tmp_path / 'synthetic'),
                                    'DEMO_OUT': str(out), 'DEMO_STEPS': '2',
                                    'DEMO_IDENTITIES': '20', 'DEMO_IMAGES_PER_IDENTITY': '4',
                                    'DEMO_WORKERS': '2', 'TRAIN_FLAGS': '--partial_fc True'})
    assert result.returncode == 0, result.stdout[-3000:]
    assert '[lfw][2]Accuracy-Flip:' in result.stdout
    assert 'demo finished in' in result.stdout
    flags = json.loads((out / 'logs' / 'run_config.json').read_text())['flags']
    assert flags['batch_size'] == 32 and str(flags['worker_hosts']).count('127.0.0.1:') == 2
    assert 'worker 1 of 2' in (out / 'logs' / 'worker_1.out').read_text()
    assert not list((out / 'ckpt').glob('*.part-*'))
    for name in ('eval_final.json', 'eval_best.json'):
        results = json.loads((out / name).read_text())['results']
        assert [(r['dataset'], r['nrof_pairs']) for r in results] == [('lfw', 600)]
        assert 0.0 <= results[0]['accuracy'] <= 1.0
    assert (out / 'ckpt' / 'checkpoint').exists()
    assert list((out / 'roc').glob('*.png'))
    assert not (out / 'ckpt' / 'InsightFace_iter_9.ckpt.index').exists()
    (aside,) = (out / 'previous').iterdir()
    assert 'earlier run in %s moved to %s' % (out, aside) in result.stdout
    for name in earlier:
        assert (aside / name).read_text() == 'earlier run: ' + name


def test_a_worker_count_that_does_not_divide_the_batch_is_refused(tmp_path):
    out = tmp_path / 'demo'
    result = run_recipe('demo', {'DEMO_DATA': str(tmp_path / 'synthetic'), 'DEMO_OUT': str(out),
                                    'DEMO_WORKERS': '3'})
    assert result.returncode == 2
    assert result.stdout.strip() == ('recipe.sh: DEMO_WORKERS=3: expected a whole number that '
                                     'divides the batch (64)')
    assert not out.exists() and not (tmp_path / 'synthetic').exists()


def small_bin(bin_path, out_dir, name, pairs_per_kind=10):
    """A slice of a real verification .bin (same and different pairs alternating), for speed."""
    bins, issame = eval_data_reader.read_bin(bin_path)
    same = [k for k in range(len(issame)) if issame[k]][:pairs_per_kind]
    different = [k for k in range(len(issame)) if not issame[k]][:pairs_per_kind]
    pairs = [k for pair in zip(same, different) for k in pair]
    small_bins = [bins[2 * k + i] for k in pairs for i in (0, 1)]
    with open(os.path.join(str(out_dir), name + '.bin'), 'wb') as out:
        pickle.dump((small_bins, [bool(issame[k]) for k in pairs]), out, protocol=2)


# recipe -> its folder in ../shared/data, verification set, (images, identities) of its
# training data, and flags of its settings file that must reach train_nets.py.
REAL_FACE_RECIPES = {
    'orl': ('orl_faces', 'orl_val', (300, 30),
            {'weight_decay': 5e-3, 'margin_s': 32.0, 'augment': True}),
    'lfw': ('lfw_faces', 'lfw_dev', (6051, 3132),
            {'clip_gradient_norm': 5.0, 'warmup_steps': 200, 'margin_s': 64.0, 'augment': False}),
}


@pytest.mark.parametrize('recipe', sorted(REAL_FACE_RECIPES))
def test_real_face_recipe_on_the_real_faces(shared_data, tmp_path, recipe):
    folder, val, counts, settings = REAL_FACE_RECIPES[recipe]
    data = os.path.join(shared_data, folder)
    small_bin(os.path.join(data, val + '.bin'), tmp_path, 'small')
    out, steps, name = tmp_path / recipe, 3, recipe.upper()
    result = run_recipe(recipe, {name + '_DATA': data, name + '_VAL_DB': str(tmp_path),
                                 name + '_VAL': 'small', name + '_STEPS': str(steps),
                                 name + '_VALIDATE_INTERVAL': str(steps), name + '_OUT': str(out)})
    assert result.returncode == 0, result.stdout[-3000:]
    manifest = load_manifest(str(out / 'tfrecords'))
    assert (manifest['num_images'], manifest['num_classes']) == counts
    assert '[small][%d]Accuracy-Flip:' % steps in result.stdout
    assert '[small] errors at threshold ' in result.stdout  # --error_report on the final
    for evaluation in ('eval_final.json', 'eval_best.json'):
        payload = json.loads((out / evaluation).read_text())
        assert [(r['dataset'], r['nrof_pairs']) for r in payload['results']] == [('small', 20)]
        assert payload['net_input_size'] == [56, 56]  # evaluated as trained
    assert (out / 'ckpt' / ('InsightFace_iter_%d.ckpt.index' % steps)).exists()
    assert list((out / 'ckpt' / 'best').glob('*.index'))
    flags = json.loads((out / 'logs' / 'run_config.json').read_text())['flags']
    assert {k: flags[k] for k in settings} == settings


def test_recipes_refuse_missing_data(tmp_path):
    for recipe in ('orl', 'lfw'):
        result = run_recipe(recipe, {recipe.upper() + '_DATA': str(tmp_path / 'nowhere')})
        assert result.returncode == 2
        assert result.stdout.count('\n') == 1, result.stdout  # one line, nothing installed or run
        assert result.stdout.startswith('%s: %s not found: ' % (recipe, tmp_path / 'nowhere' / 'train.rec'))
        assert 'docs/data.md' in result.stdout and recipe.upper() + '_DATA' in result.stdout
    # TFRecords already converted (a manifest): only the verification set is looked for.
    converted = tmp_path / 'converted'
    converted.mkdir()
    (converted / 'manifest.json').write_text(u'{}')
    result = run_recipe('orl', {'ORL_DATA': str(converted)})
    assert result.returncode == 2
    assert '%s not found' % (converted / 'orl_val.bin') in result.stdout
    assert 'train.rec' not in result.stdout
    # ... also in its tfrecords/ (test/train_*.sh's --data_path layout), the .bin beside.
    beside = tmp_path / 'beside'
    (beside / 'tfrecords').mkdir(parents=True)
    (beside / 'tfrecords' / 'manifest.json').write_text(u'{}')
    result = run_recipe('lfw', {'LFW_DATA': str(beside)})
    assert result.returncode == 2
    assert result.stdout.startswith('lfw: %s not found: ' % (beside / 'lfw_dev.bin'))


def test_unknown_recipe_is_refused_with_the_known_ones():
    result = run_recipe('imagenet', {})
    assert result.returncode == 2
    assert result.stdout.strip() == ("recipe.sh: no recipe 'imagenet' (tools/recipes/imagenet.sh); "
                                     "known: demo lfw orl")
