"""The README's demo and the ORL real-faces recipe, run end to end at a tiny scale.

The full runs take 10 and 20 minutes; here the same scripts run a couple of steps, so
every stage (generate or convert, train, validate, evaluate) is exercised for real.
"""
import json
import os
import pickle
import subprocess
import sys

from data import eval_data_reader
from data.manifest import load_manifest

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, env_overrides):
    env = dict(os.environ, PYTHON=sys.executable, **env_overrides)
    return subprocess.run(['bash', os.path.join('tools', script)], cwd=PROJECT_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600)


def test_demo_script_generates_trains_validates_and_evaluates(tmp_path):
    out = tmp_path / 'demo'
    result = run_script('demo.sh', {'DEMO_DATA': str(tmp_path / 'synthetic'),
                                    'DEMO_OUT': str(out), 'DEMO_STEPS': '2',
                                    'DEMO_IDENTITIES': '20', 'DEMO_IMAGES_PER_IDENTITY': '4'})
    assert result.returncode == 0, result.stdout[-3000:]
    assert '[lfw][2]Accuracy-Flip:' in result.stdout
    assert 'demo finished in' in result.stdout
    results = json.loads((out / 'eval.json').read_text())['results']
    assert [(r['dataset'], r['nrof_pairs']) for r in results] == [('lfw', 600)]
    assert 0.0 <= results[0]['accuracy'] <= 1.0
    assert (out / 'ckpt' / 'checkpoint').exists()
    assert list((out / 'roc').glob('*.png'))


def test_orl_recipe_on_the_real_faces(shared_data, tmp_path):
    orl = os.path.join(shared_data, 'orl_faces')
    # Validation on a 20-pair slice of the real orl_val.bin keeps this test fast.
    bins, issame = eval_data_reader.read_bin(os.path.join(orl, 'orl_val.bin'))
    same = [k for k in range(len(issame)) if issame[k]][:10]
    different = [k for k in range(len(issame)) if not issame[k]][:10]
    pairs = [k for pair in zip(same, different) for k in pair]
    small_bins = [bins[2 * k + i] for k in pairs for i in (0, 1)]
    with open(str(tmp_path / 'orl_small.bin'), 'wb') as out:
        pickle.dump((small_bins, [bool(issame[k]) for k in pairs]), out, protocol=2)
    out = tmp_path / 'orl'
    result = run_script('train_orl.sh', {'ORL_DATA': orl, 'ORL_VAL_DB': str(tmp_path),
                                         'ORL_VAL': 'orl_small', 'ORL_STEPS': '2',
                                         'ORL_VALIDATE_INTERVAL': '2', 'ORL_OUT': str(out)})
    assert result.returncode == 0, result.stdout[-3000:]
    manifest = load_manifest(str(out / 'tfrecords'))
    assert (manifest['num_images'], manifest['num_classes']) == (300, 30)
    assert '[orl_small][2]Accuracy-Flip:' in result.stdout
    assert '[orl_small] errors at threshold ' in result.stdout  # --error_report on the final
    for name in ('eval_final.json', 'eval_best.json'):
        payload = json.loads((out / name).read_text())
        assert [(r['dataset'], r['nrof_pairs']) for r in payload['results']] == [('orl_small', 20)]
        assert payload['net_input_size'] == [56, 56]  # evaluated as trained
    assert (out / 'ckpt' / 'InsightFace_iter_2.ckpt.index').exists()


def test_orl_recipe_refuses_missing_data(tmp_path):
    result = run_script('train_orl.sh', {'ORL_DATA': str(tmp_path / 'nowhere')})
    assert result.returncode == 2
    assert 'train.rec not found' in result.stdout
    assert 'README\'s "Data" section' in result.stdout and 'ORL_DATA' in result.stdout
    # TFRecords already converted (a manifest): only the verification set is looked for.
    converted = tmp_path / 'converted'
    converted.mkdir()
    (converted / 'manifest.json').write_text(u'{}')
    result = run_script('train_orl.sh', {'ORL_DATA': str(converted)})
    assert result.returncode == 2
    assert '%s not found' % (converted / 'orl_val.bin') in result.stdout
    assert 'train.rec' not in result.stdout
