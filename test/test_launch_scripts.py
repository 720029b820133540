"""The ModelZoo-style launch scripts in test/, run end to end on the CPU on a tiny dataset.

train_full_8p.sh runs as two processes with the npu_bridge STAND-IN
(test/npu_standin) on PYTHONPATH and a two-device rank table; the stand-in's
HCCL connects them (TensorFlow collectives over loopback gRPC), so the two
ranks must end with identical variables.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from data import mx2tfrecords
from data.make_synthetic_dataset import make_dataset

from conftest import PROJECT_ROOT, free_port_base, npu_environ  # noqa: E402
from test_npu_ranks import identical_but_batch_norm_statistics, variables_at_close
TEST_DIR = os.path.join(PROJECT_ROOT, 'test')
STANDIN_PATH = os.path.join(TEST_DIR, 'npu_standin')
TINY_FLAGS = ['--net_depth=18', '--batch_size', '4', '--max_steps=3', '--image_size', '32,32',
              '--eval_batch_size', '8', '--buffer_size', '16', '--show_info_interval', '1']
NUMBER = r'[0-9]+(\.[0-9]+)?'


@pytest.fixture(scope='module')
def data_path(tmp_path_factory):
    """The layout the scripts expect: <data_path>/tfrecords/ and <data_path>/lfw.bin."""
    root = os.path.join(str(tmp_path_factory.mktemp('launch')), 'data')
    make_dataset(root, num_identities=8, images_per_identity=6, num_val_identities=4,
                 num_val_pairs=20, image_size=(32, 32), seed=3)
    mx2tfrecords.convert(os.path.join(root, 'train.rec'), os.path.join(root, 'train.idx'),
                         os.path.join(root, 'tfrecords'), num_shards=2, progress=False)
    return root


def run_script(name, args, output_dir, **env):
    environ = npu_environ(PYTHON=sys.executable, OUTPUT_DIR=output_dir, **env)
    return subprocess.run(['bash', os.path.join(TEST_DIR, name)] + args, cwd=PROJECT_ROOT,
                          env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)


def summary(path):
    with open(path) as lines:
        return dict(line.rstrip('\n').split(' = ', 1) for line in lines)


def check_final_lines(stdout, log_path, accuracy):
    for line in ('Final Performance images/sec', 'Final Performance sec/step',
                 'E2E Training Duration sec') + (('Final Train Accuracy',) if accuracy else ()):
        pattern = r'^%s : %s$' % (re.escape(line), NUMBER)
        assert re.search(pattern, stdout, re.M), (line, stdout)
        with open(log_path) as log:
            assert re.search(pattern, log.read(), re.M), line
    if not accuracy:
        assert 'Final Train Accuracy' not in stdout


def test_full_1p_on_cpu(data_path, tmp_path):
    out = str(tmp_path)
    result = run_script('train_full_1p.sh', ['--data_path=' + data_path, '--device=cpu',
                                             '--validate_interval', '2'] + TINY_FLAGS, out)
    assert result.returncode == 0, result.stdout + result.stderr
    log_path = os.path.join(out, '0', 'train_0.log')
    with open(log_path) as log:
        log_text = log.read()
    assert 'device cpu' in log_text and '[lfw][2]Accuracy-Flip' in log_text
    # The original's default learning rate: the scripts pass no --lr_values.
    assert re.findall(r'samples/sec, lr ([0-9.e-]+)', log_text) == ['0.001'] * 3
    check_final_lines(result.stdout, log_path, accuracy=True)
    last_accuracy = re.findall(r'test accuracy is: ([0-9.]+)', log_text)[-1]
    assert 'Final Train Accuracy : %s' % last_accuracy in result.stdout
    case = 'ArcFace_LResNet18E-IR_for_TensorFlow_bs4_1p_acc'
    fields = summary(os.path.join(out, '0', case + '.log'))
    assert list(fields) == ['Network', 'RankSize', 'BatchSize', 'DeviceType', 'CaseName',
                            'ActualFPS', 'TrainingTime', 'TrainAccuracy', 'ActualLoss',
                            'E2ETrainingTime']
    assert (fields['Network'], fields['RankSize'], fields['BatchSize'], fields['CaseName']) == (
        'ArcFace_LResNet18E-IR_for_TensorFlow', '1', '4', case)
    assert fields['TrainAccuracy'] == last_accuracy
    assert fields['ActualLoss'] == re.findall(r'total loss is ([0-9.]+)', log_text)[-1]
    for name in ('ActualFPS', 'TrainingTime', 'E2ETrainingTime'):
        assert re.match(NUMBER + '$', fields[name]), (name, fields[name])
    assert float(fields['ActualFPS']) > 0
    assert os.listdir(os.path.join(out, '0', 'ckpt'))


def test_performance_1p_on_cpu(data_path, tmp_path):
    """...and an earlier run's folder of that device is moved aside, not deleted."""
    out = str(tmp_path)
    os.makedirs(os.path.join(out, '3', 'ckpt'))
    with open(os.path.join(out, '3', 'ckpt', 'notes.txt'), 'w') as notes:
        notes.write('my notes')
    result = run_script('train_performance_1p.sh', ['--data_path', data_path, '--device', 'cpu']
                        + TINY_FLAGS, out, ASCEND_DEVICE_ID='3')
    assert result.returncode == 0, result.stdout + result.stderr
    log_path = os.path.join(out, '3', 'train_3.log')
    check_final_lines(result.stdout, log_path, accuracy=False)
    fields = summary(os.path.join(out, '3', 'ArcFace_LResNet18E-IR_for_TensorFlow_bs4_1p_perf.log'))
    assert fields['RankSize'] == '1' and 'TrainAccuracy' not in fields
    with open(log_path) as log:
        assert '[lfw][2]' not in log.read()  # no validation before the last step
    (aside,) = os.listdir(os.path.join(out, 'previous'))
    aside = os.path.join(out, 'previous', aside)
    assert 'the earlier run in %s moved to %s' % (out, aside) in result.stdout
    with open(os.path.join(aside, '3', 'ckpt', 'notes.txt')) as notes:
        assert notes.read() == 'my notes'


@pytest.mark.parametrize('script', ['train_full_1p.sh', 'train_performance_1p.sh',
                                    'train_full_8p.sh'])
def test_refuses_to_run_without_data_path(script, tmp_path):
    result = run_script(script, ['--net_depth=18'], str(tmp_path))
    assert result.returncode == 2
    assert '--data_path is required' in result.stderr
    assert not os.listdir(str(tmp_path))


def test_refuses_a_data_path_without_tfrecords(tmp_path):
    result = run_script('train_full_1p.sh', ['--data_path', str(tmp_path)], str(tmp_path / 'o'))
    assert result.returncode == 2 and 'no manifest.json' in result.stderr


def test_8p_refuses_other_devices(data_path, tmp_path):
    result = run_script('train_full_8p.sh', ['--data_path=' + data_path, '--device=cpu'],
                        str(tmp_path))
    assert result.returncode == 2 and 'use --device=npu' in result.stderr


def test_8p_as_two_processes_with_the_standin(data_path, tmp_path):
    table = str(tmp_path / 'rank_table_2p.json')
    with open(os.path.join(TEST_DIR, 'rank_table_8p.json')) as example:
        rank_table = json.load(example)
    rank_table['server_list'][0]['device'] = rank_table['server_list'][0]['device'][:2]
    with open(table, 'w') as out:
        json.dump(rank_table, out)
    out = str(tmp_path / 'output')
    record = str(tmp_path / 'record_{rank}.json')  # the stand-in fills in RANK_ID
    result = run_script('train_full_8p.sh', ['--data_path=' + data_path] + TINY_FLAGS, out,
                        RANK_SIZE='2', RANK_TABLE_FILE=table, NPU_STANDIN_RECORD=record,
                        NPU_STANDIN_HCCL_BASE_PORT=str(free_port_base(2)),
                        PYTHONPATH=os.pathsep.join([STANDIN_PATH, PROJECT_ROOT]))
    assert result.returncode == 0, result.stdout + result.stderr
    variables = []
    for rank in (0, 1):
        with open(record.format(rank=rank)) as recorded:
            variables.append(variables_at_close(json.load(recorded)))
    assert sorted(variables[0]) == sorted(variables[1])
    assert identical_but_batch_norm_statistics(*variables)
    for rank in (0, 1):
        with open(os.path.join(out, str(rank), 'train_%d.log' % rank)) as log:
            text = log.read()
        assert 'device npu' in text
        assert 'rank %d of 2: all variables broadcast from rank 0' % rank in text
        assert 'step 3, total loss' in text
    assert sorted(os.listdir(os.path.join(out, '1'))) == ['train_1.log']  # rank 1 writes no more
    check_final_lines(result.stdout, os.path.join(out, '0', 'train_0.log'), accuracy=True)
    fields = summary(os.path.join(out, '0', 'ArcFace_LResNet18E-IR_for_TensorFlow_bs4_2p_acc.log'))
    assert fields['RankSize'] == '2'
