"""export_model.py: frozen GraphDef and SavedModel equal the checkpoint; names; refusals.

The checkpoint is a training checkpoint of depth 18 on 32x32 images (made by
test_eval_ckpt_file.make_checkpoints: ArcFace weights, Momentum slots and
global_step beside the backbone), with batch-norm statistics warmed up so that
embeddings have a realistic scale (elements of order 1). The export runs
through main() (one refusal runs the script as a subprocess); the exports are
then loaded in fresh graphs, here and in every other project environment
present (.venv, .venv-tf1), because a frozen graph written by TensorFlow 2
must still load in TensorFlow 1.15 (and Ascend's ATC).

Tolerances. With grappler's graph rewrites switched off, checkpoint, frozen
graph and SavedModel give identical numbers (the test demands < 1e-5). With
the default session config, grappler folds the frozen graph's constant
weights (e.g. batch norm into convolutions), which changes float32 rounding:
about 2e-6 of the largest embedding element; that case is checked relative
to the embeddings' scale, as is a load in another TensorFlow version.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from nets import checkpoint_names

import export_model
from nets import inference
from test_eval_ckpt_file import make_checkpoints, synthetic_pairs

from conftest import PROJECT_ROOT  # noqa: E402
ENVIRONMENTS = ('.venv', '.venv-tf1')  # the project's two test environments
DEPTH = 18
IMAGE_SIZE = (32, 32)
TOLERANCE = 1e-5  # max abs difference, same TensorFlow, no graph rewrites
RELATIVE_TOLERANCE = 1e-5  # of max |embedding|: default rewrites, other TensorFlow

# Loads both exports in fresh graphs and writes their outputs for a batch (.npy).
_LOAD_SCRIPT = '''
import sys
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
export_dir, batch_path, out_path = sys.argv[1:]
batch = np.load(batch_path)
graph_def = tf.GraphDef()
with open(export_dir + '/frozen_model.pb', 'rb') as pb:
    graph_def.ParseFromString(pb.read())
config = tf.ConfigProto()
config.graph_options.rewrite_options.disable_meta_optimizer = True
with tf.Graph().as_default(), tf.Session(config=config) as sess:
    tf.import_graph_def(graph_def, name='')
    frozen = sess.run('embeddings:0', {'input_images:0': batch})
with tf.Graph().as_default(), tf.Session(config=config) as sess:
    meta = tf.saved_model.loader.load(sess, ['serve'], export_dir + '/saved_model')
    signature = meta.signature_def['serving_default']
    saved = sess.run(signature.outputs['embeddings'].name,
                     {signature.inputs['images'].name: batch})
np.save(out_path, np.stack([frozen, saved]))
'''


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A checkpoint and its export (both formats, dynamic batch, normalised output too)."""
    root = tmp_path_factory.mktemp('export')
    prefix = make_checkpoints(str(root), (1,), batch_size=8, bn_warmup=20)[1]
    output_dir = str(root / 'export')
    assert export_model.main(['--ckpt_file', str(root), '--net_depth', str(DEPTH),
                              '--image_size', '%d,%d' % IMAGE_SIZE, '--output_dir', output_dir,
                              '--normalized_output']) == 0
    batch = np.stack(synthetic_pairs(3, seed=7)[0][:5])  # faces, as the checkpoint expects
    return {'root': str(root), 'prefix': prefix, 'dir': output_dir,
            'batch': batch, 'expected': checkpoint_embeddings(prefix, batch, plain_config()),
            'expected_default': checkpoint_embeddings(prefix, batch, tf.ConfigProto())}


def run_cli(args, timeout=300):
    return subprocess.run([sys.executable, 'export_model.py'] + args, cwd=PROJECT_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def plain_config():
    """A session config with grappler's graph rewrites off: every graph runs as written."""
    config = tf.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return config


def checkpoint_embeddings(prefix, batch, config):
    """The embeddings of `batch` from the checkpoint, as eval_ckpt_file.py computes them."""
    with tf.Graph().as_default():
        images, embeddings = inference.inference_graph(DEPTH, IMAGE_SIZE)
        saver = tf.train.Saver(var_list=checkpoint_names.backbone_variables(DEPTH))
        with tf.Session(config=config) as sess:
            checkpoint_names.restore(sess, saver, prefix)
            return sess.run(embeddings, {images: batch})


def run_exports(export_dir, batch, config):
    """(frozen, frozen_normalized, saved, saved_normalized) outputs for `batch`."""
    with tf.Graph().as_default(), tf.Session(config=config) as sess:
        tf.import_graph_def(load_frozen(os.path.join(export_dir, 'frozen_model.pb')), name='')
        frozen = sess.run(['embeddings:0', 'embeddings_normalized:0'], {'input_images:0': batch})
    with tf.Graph().as_default(), tf.Session(config=config) as sess:
        meta = tf.saved_model.loader.load(sess, [tf.saved_model.tag_constants.SERVING],
                                          os.path.join(export_dir, 'saved_model'))
        signature = meta.signature_def['serving_default']
        saved = sess.run([signature.outputs['embeddings'].name,
                          signature.outputs['embeddings_normalized'].name],
                         {signature.inputs['images'].name: batch})
    return frozen + saved


def relative_error(actual, expected):
    return np.abs(actual - expected).max() / max(1.0, np.abs(expected).max())


def load_frozen(path):
    graph_def = tf.GraphDef()
    with open(path, 'rb') as pb:
        graph_def.ParseFromString(pb.read())
    return graph_def


def test_frozen_graph_and_saved_model_equal_the_checkpoint(exported):
    expected = exported['expected']
    assert expected.shape == (5, 512)
    assert 0.5 < np.abs(expected).max() < 50.0  # a realistic scale, so 1e-5 means something
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    frozen, frozen_unit, saved, saved_unit = run_exports(exported['dir'], exported['batch'],
                                                         plain_config())
    for output in (frozen, saved):
        assert np.abs(output - expected).max() < TOLERANCE
    for output in (frozen_unit, saved_unit):
        assert np.abs(output - unit).max() < TOLERANCE


def test_default_session_config_differs_only_by_rounding(exported):
    expected = exported['expected_default']
    frozen, _, saved, _ = run_exports(exported['dir'], exported['batch'], tf.ConfigProto())
    assert np.abs(saved - expected).max() < TOLERANCE  # the same graph, variables restored
    assert relative_error(frozen, expected) < RELATIVE_TOLERANCE


def test_node_names_and_signature(exported):
    graph_def = load_frozen(os.path.join(exported['dir'], 'frozen_model.pb'))
    nodes = {node.name: node for node in graph_def.node}
    placeholder = nodes['input_images']
    assert placeholder.op == 'Placeholder'
    assert placeholder.attr['dtype'].type == tf.uint8.as_datatype_enum
    assert [d.size for d in placeholder.attr['shape'].shape.dim] == [-1, 32, 32, 3]
    assert [n.name for n in graph_def.node if n.op == 'Placeholder'] == ['input_images']
    assert 'embeddings' in nodes and 'embeddings_normalized' in nodes
    assert not [n.name for n in graph_def.node if 'Variable' in n.op]
    # Default-valued attributes are stripped (TensorFlow 1.15 refuses unknown ones).
    assert not [n.name for n in graph_def.node if 'exponential_avg_factor' in n.attr]
    with tf.Graph().as_default(), tf.Session() as sess:
        meta = tf.saved_model.loader.load(sess, ['serve'],
                                          os.path.join(exported['dir'], 'saved_model'))
    signature = meta.signature_def['serving_default']
    assert list(signature.inputs) == ['images']
    assert sorted(signature.outputs) == ['embeddings', 'embeddings_normalized']
    assert signature.inputs['images'].name == 'input_images:0'
    assert signature.inputs['images'].dtype == tf.uint8.as_datatype_enum
    assert signature.outputs['embeddings'].name == 'embeddings:0'
    assert signature.outputs['embeddings'].dtype == tf.float32.as_datatype_enum
    assert sorted(os.listdir(exported['dir'])) == [  # each with its record
        '.frozen_model.pb.written.json', '.saved_model.written.json', 'frozen_model.pb',
        'saved_model']


def test_atc_command():
    args = export_model.get_parser().parse_args(['--ckpt_file', 'c', '--output_dir', 'out',
                                                 '--batch_size', '8', '--net_depth', '50'])
    assert export_model.atc_command(args, 50) == (
        'atc --model=out/frozen_model.pb --framework=3 --output=out/insightface_r50 '
        '--soc_version=Ascend910 --input_shape="input_images:8,112,112,3"')
    args.normalized_output = True
    assert export_model.atc_command(args, 50).endswith(' --out_nodes="embeddings_normalized:0"')


def test_exports_load_in_every_project_environment(exported, tmp_path):
    """Covers TensorFlow 2 -> 1.15 (and back): the other environment loads the export."""
    others = [os.path.join(PROJECT_ROOT, env, 'bin', 'python') for env in ENVIRONMENTS
              if os.path.isdir(os.path.join(PROJECT_ROOT, env))
              and os.path.abspath(os.path.join(PROJECT_ROOT, env)) != os.path.abspath(sys.prefix)]
    if not others:
        pytest.skip('no other project environment (%s) to load the export in'
                    % ', '.join(ENVIRONMENTS))
    batch_path = str(tmp_path / 'batch.npy')
    np.save(batch_path, exported['batch'])
    for python in others:
        out_path = str(tmp_path / 'out.npy')
        proc = subprocess.run([python, '-c', _LOAD_SCRIPT, exported['dir'], batch_path, out_path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=300)
        assert proc.returncode == 0, (python, proc.stderr)
        for output in np.load(out_path):
            assert relative_error(output, exported['expected']) < RELATIVE_TOLERANCE, python


def export_flags(exported, output_dir, *extra):
    return ['--ckpt_file', exported['prefix'], '--net_depth', str(DEPTH), '--image_size',
            '%d,%d' % IMAGE_SIZE, '--output_dir', output_dir] + list(extra)


def test_static_batch_frozen_graph_only(exported, tmp_path):
    output_dir = str(tmp_path / 'static')
    assert export_model.main(export_flags(exported, output_dir, '--format', 'pb',
                                          '--batch_size', '5')) == 0
    assert sorted(os.listdir(output_dir)) == ['.frozen_model.pb.written.json',
                                              'frozen_model.pb']  # and its record
    graph_def = load_frozen(os.path.join(output_dir, 'frozen_model.pb'))
    nodes = {node.name: node for node in graph_def.node}
    assert [d.size for d in nodes['input_images'].attr['shape'].shape.dim] == [5, 32, 32, 3]
    assert 'embeddings_normalized' not in nodes
    with tf.Graph().as_default(), tf.Session(config=plain_config()) as sess:
        tf.import_graph_def(graph_def, name='')
        output = sess.run('embeddings:0', {'input_images:0': exported['batch']})
    assert np.abs(output - exported['expected']).max() < TOLERANCE


def refusal(capsys, argv, code=2):
    assert export_model.main(argv) == code
    captured = capsys.readouterr()
    assert 'Traceback' not in captured.err and not captured.out
    errors = [line for line in captured.err.splitlines()
              if line.startswith('export_model.py: error: ')]
    assert len(errors) == 1, captured.err
    return errors[0]


def test_refuses_to_overwrite_unless_asked(exported, tmp_path, capsys):
    output_dir = str(tmp_path / 'out')
    frozen = os.path.join(output_dir, 'frozen_model.pb')
    assert export_model.main(export_flags(exported, output_dir, '--format', 'pb')) == 0
    (tmp_path / 'out' / 'notes.txt').write_text(u'not ours')
    before = os.stat(frozen)
    err = refusal(capsys, export_flags(exported, output_dir))
    assert err == ('export_model.py: error: --output_dir %s already holds frozen_model.pb; '
                   'pass --overwrite to replace it' % output_dir)
    assert os.stat(frozen).st_ino == before.st_ino
    assert visible(output_dir) == ['frozen_model.pb', 'notes.txt']
    capsys.readouterr()
    assert export_model.main(export_flags(exported, output_dir, '--overwrite')) == 0
    assert os.stat(frozen).st_ino != before.st_ino
    assert visible(output_dir) == ['frozen_model.pb', 'notes.txt', 'saved_model']
    err = refusal(capsys, export_flags(exported, output_dir, '--format', 'saved_model'))
    assert 'already holds saved_model' in err


def visible(folder):
    """The entries of a folder but the hidden records of what export_model.py wrote."""
    return sorted(name for name in os.listdir(folder) if not name.endswith('.written.json'))


def test_overwrite_replaces_only_what_it_wrote(exported, tmp_path, capsys):
    output_dir = str(tmp_path / 'out')
    os.makedirs(output_dir)
    frozen = os.path.join(output_dir, 'frozen_model.pb')
    with open(frozen, 'wb') as f:  # the user's own model, by that name
        f.write(b'mine')
    err = refusal(capsys, export_flags(exported, output_dir, '--format', 'pb', '--overwrite'))
    assert err == ('export_model.py: error: --output_dir entry %s was not written by '
                   'export_model.py (it has no record .frozen_model.pb.written.json); '
                   '--overwrite replaces only that: move it away or choose another name'
                   % frozen)
    with open(frozen, 'rb') as f:
        assert f.read() == b'mine'
    os.remove(frozen)
    assert export_model.main(export_flags(exported, output_dir)) == 0
    notes = os.path.join(output_dir, 'saved_model', 'assets', 'notes.txt')
    os.makedirs(os.path.dirname(notes))
    with open(notes, 'w') as f:  # the user's file inside the SavedModel folder
        f.write('mine')
    err = refusal(capsys, export_flags(exported, output_dir, '--overwrite'))
    assert err == ('export_model.py: error: --output_dir entry %s has changed since '
                   'export_model.py wrote it (assets, assets/notes.txt); --overwrite replaces '
                   'only what it wrote: move it away or choose another name'
                   % os.path.join(output_dir, 'saved_model'))
    with open(notes) as f:
        assert f.read() == 'mine'
    os.remove(notes)
    os.rmdir(os.path.dirname(notes))
    before = os.stat(frozen).st_ino
    assert export_model.main(export_flags(exported, output_dir, '--overwrite')) == 0
    assert os.stat(frozen).st_ino != before
    assert sorted(os.listdir(output_dir)) == ['.frozen_model.pb.written.json',
                                              '.saved_model.written.json', 'frozen_model.pb',
                                              'saved_model']


def test_missing_checkpoint_as_subprocess(exported, tmp_path):
    missing = os.path.join(exported['root'], 'InsightFace_iter_9.ckpt')
    output_dir = str(tmp_path / 'never')
    flags = export_flags(exported, output_dir)
    flags[1] = missing
    proc = run_cli(flags)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr and not proc.stdout
    assert not re.search(r'^\w+(Error|Exception)\b', proc.stderr, re.M), proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('export_model.py')]
    assert errors == ['export_model.py: error: checkpoint %s not found: expected the files '
                      '%s.index and %s.data-*' % (missing, missing, missing)]
    assert not os.path.exists(output_dir)


def test_wrong_depth_and_image_size(exported, tmp_path, capsys):
    output_dir = str(tmp_path / 'never')
    err = refusal(capsys, export_flags(exported, output_dir, '--net_depth', '50'))
    assert err.endswith('checkpoint %s holds a depth-18 network (resnet_v1_18/...); '
                        '--net_depth 50 expected resnet_v1_50' % exported['prefix'])
    err = refusal(capsys, export_flags(exported, output_dir, '--image_size', '112,112'))
    assert 'E_DenseLayer/W has shape [2048, 512]' in err and 'from 17,17 to 32,32' in err
    assert not os.path.exists(output_dir)


def test_truncated_checkpoint_leaves_no_output(exported, tmp_path, capsys):
    prefix = str(tmp_path / 'InsightFace_iter_1.ckpt')
    with open(exported['prefix'] + '.index', 'rb') as index:
        (tmp_path / 'InsightFace_iter_1.ckpt.index').write_bytes(index.read())
    with open(exported['prefix'] + '.data-00000-of-00001', 'rb') as shard:
        (tmp_path / 'InsightFace_iter_1.ckpt.data-00000-of-00001').write_bytes(
            shard.read()[:100000])
    output_dir = str(tmp_path / 'out')
    flags = export_flags(exported, output_dir)
    flags[1] = prefix
    err = refusal(capsys, flags, code=1)
    assert err == ('export_model.py: error: cannot restore checkpoint %s: Read less bytes than '
                   'requested (OutOfRangeError); is it complete?' % prefix)
    assert not os.path.exists(output_dir)
    os.makedirs(output_dir)  # an existing folder stays, empty
    assert refusal(capsys, flags, code=1) == err
    assert not os.listdir(output_dir)


def test_help_documents_every_flag():
    help_text = export_model.get_parser().format_help()
    for flag in ('--ckpt_file', '--net_depth', '--image_size', '--output_dir', '--batch_size',
                 '--format', '--normalized_output', '--overwrite'):
        assert flag in help_text
