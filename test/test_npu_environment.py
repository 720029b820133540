"""What an Ascend (CANN) machine's environment brings: the install, device ids, HCCL's switch.

- requirements-npu.txt installs next to CANN's TensorFlow 1.15.0 without touching it;
- the rank table's device_id (physical) is checked only against a physical id: DEVICE_ID,
  or ASCEND_DEVICE_ID (logical) through ASCEND_RT_VISIBLE_DEVICES; otherwise a warning;
- CANN's adapter starts HCCL whenever RANK_TABLE_FILE is set and RANK_SIZE > 0, so a
  one-device run refuses a multi-device table and the 1p scripts do not pass it on.
Facts: ../shared/reference/npu_bridge_api.md, section 6.
"""
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT, npu_environ
from data.cli import UsageError
from devices import hccl_environment
from training import setup

TEST_DIR = os.path.join(PROJECT_ROOT, 'test')
EXAMPLE_TABLE = os.path.join(TEST_DIR, 'rank_table_8p.json')
# What TensorFlow 1.15.0, CANN's adapter or the CANN toolkit's own Python dependencies
# install: requirements-npu.txt must name none of them, or pip replaces CANN's versions.
CANN_SUPPLIED = {
    'numpy', 'protobuf', 'h5py', 'absl-py', 'grpcio', 'gast', 'astor', 'six', 'wrapt',
    'termcolor', 'opt-einsum', 'google-pasta', 'keras-applications', 'keras-preprocessing',
    'tensorboard', 'npu-bridge', 'attrs', 'decorator', 'sympy', 'cffi', 'pyyaml', 'pathlib2',
    'psutil', 'scipy', 'requests'}


# ---------------------------------------------------------------- item 1: install on CANN

def requirements(name):
    """{normalized package name: version specifier} of a requirements file in the project."""
    specs = {}
    with open(os.path.join(PROJECT_ROOT, name)) as lines:
        for line in lines:
            line = line.split('#', 1)[0].strip()
            if line:
                match = re.match(r'([A-Za-z0-9_.\[\]-]+)\s*(.*)$', line)
                specs[re.sub(r'[-_.]+', '-', match.group(1).split('[')[0]).lower()] = (
                    match.group(2).replace(' ', ''))
    return specs


def version(text):
    return tuple(int(part) for part in re.findall(r'\d+', text))


def admits(specifier, pinned):
    """Whether a specifier such as '==3.5.3' or '>=3.3,<3.6' admits the version pinned."""
    compare = {'==': lambda a, b: a == b, '>=': lambda a, b: a >= b, '<=': lambda a, b: a <= b,
               '>': lambda a, b: a > b, '<': lambda a, b: a < b, '!=': lambda a, b: a != b}
    for clause in specifier.split(','):
        operator, bound = re.match(r'(==|>=|<=|!=|>|<)(.+)$', clause).groups()
        if not compare[operator](version(pinned), version(bound)):
            return False
    return True


def test_npu_requirements_leave_tensorflow_and_cann_alone():
    names = requirements('requirements-npu.txt')
    assert names, 'requirements-npu.txt names no package'
    for name in names:
        assert not name.startswith(('tensorflow', 'tf-', 'tf2')), (
            'requirements-npu.txt names %s: CANN\'s adapter brings its own TensorFlow 1.15.0'
            % name)
        assert name not in CANN_SUPPLIED, (
            'requirements-npu.txt names %s, which TensorFlow 1.15 or CANN installs' % name)


def test_npu_requirements_are_the_tested_tf1_versions():
    tf1 = requirements('requirements-tf1.txt')
    for name, specifier in requirements('requirements-npu.txt').items():
        assert name in tf1, '%s is not in requirements-tf1.txt, so no test runs with it' % name
        pinned = tf1[name][len('=='):]
        assert tf1[name].startswith('==') and admits(specifier, pinned), (name, specifier,
                                                                          tf1[name])
        bounds = re.findall(r'(?:==|>=|~=)([0-9.]+)', specifier)
        assert all(version(bound)[0] == version(pinned)[0] for bound in bounds), (
            name, specifier, pinned)


def test_ascend_page_installs_the_npu_requirements_on_cann():
    with open(os.path.join(PROJECT_ROOT, 'docs', 'ascend.md')) as page:
        text = page.read()
    install = text[text.index('### Install'):text.index('### Single device')]
    assert 'pip install -r requirements-npu.txt' in install
    assert 'install -r requirements-tf1.txt' not in install
    assert 'CANN 5.0' in install and 'r1.5.0' in install
    with open(os.path.join(PROJECT_ROOT, 'README.md')) as readme:
        text = readme.read()
    layout = text[text.index('## Layout'):]
    layout = layout[:layout.index('\n## ', 1)]  # up to the next section
    assert '`requirements-npu.txt`' in layout


# ---------------------------------------------------------------- item 4: device ids

def rank_table(path, physical_ids):
    """A format 1.0 table on one server placing rank i on physical device physical_ids[i]."""
    devices = [{'device_id': str(device), 'device_ip': '192.168.10%d.101' % rank,
                'rank_id': str(rank)} for rank, device in enumerate(physical_ids)]
    with open(path, 'w') as out:
        json.dump({'server_count': '1', 'status': 'completed', 'version': '1.0',
                   'server_list': [{'server_id': '10.0.0.10', 'device': devices}]}, out)
    return path


@pytest.fixture
def upper_half(tmp_path):
    """Rank 0 on physical device 4, rank 1 on 5, as on a server's second half."""
    return {'RANK_SIZE': '2', 'RANK_ID': '1', 'JOB_ID': '10087',
            'RANK_TABLE_FILE': rank_table(str(tmp_path / 'table.json'), [4, 5])}


def test_a_logical_id_unlike_the_table_only_warns(upper_half, caplog):
    """In a container logical ids start at 0, whichever physical devices it was given."""
    with caplog.at_level(logging.WARNING):
        assert hccl_environment.hccl_ranks(dict(upper_half, ASCEND_DEVICE_ID='1')) == (1, 2)
    (record,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    message = record.getMessage()
    assert 'puts RANK_ID=1 on device_id 5, but ASCEND_DEVICE_ID=1' in message
    assert 'logical' in message and 'physical' in message and 'container' in message
    assert '\n' not in message


@pytest.mark.parametrize('env', [
    {'ASCEND_DEVICE_ID': '1', 'ASCEND_RT_VISIBLE_DEVICES': '4,5'},
    {'ASCEND_DEVICE_ID': '0', 'ASCEND_RT_VISIBLE_DEVICES': '5'},
    {'ASCEND_DEVICE_ID': '1', 'ASCEND_RT_VISIBLE_DEVICES': ' 7, 5 '},
    {'DEVICE_ID': '5'},
    {'DEVICE_ID': '5', 'ASCEND_RT_VISIBLE_DEVICES': '4,5,6,7'},
])
def test_physical_ids_that_match_are_accepted_silently(upper_half, env, caplog):
    with caplog.at_level(logging.WARNING):
        assert hccl_environment.hccl_ranks(dict(upper_half, **env)) == (1, 2)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize('env,message', [
    ({'ASCEND_DEVICE_ID': '0', 'ASCEND_RT_VISIBLE_DEVICES': '4,5'},
     'puts RANK_ID=1 on device_id 5, but ASCEND_DEVICE_ID=0 is physical device 4 '
     '(ASCEND_RT_VISIBLE_DEVICES=4,5)'),
    ({'ASCEND_DEVICE_ID': '2', 'ASCEND_RT_VISIBLE_DEVICES': '4,5'},
     'ASCEND_DEVICE_ID=2 is out of range for ASCEND_RT_VISIBLE_DEVICES=4,5: expected 0..1'),
    ({'ASCEND_DEVICE_ID': '1', 'ASCEND_RT_VISIBLE_DEVICES': '4,five'},
     "ASCEND_RT_VISIBLE_DEVICES='4,five': expected physical device ids separated by commas"),
    ({'DEVICE_ID': '1'}, 'puts RANK_ID=1 on device_id 5, but DEVICE_ID=1'),
    ({'DEVICE_ID': '5', 'ASCEND_RT_VISIBLE_DEVICES': '6,7'},
     'DEVICE_ID=5 is not in ASCEND_RT_VISIBLE_DEVICES=6,7'),
])
def test_comparable_ids_that_differ_are_refused(upper_half, env, message):
    with pytest.raises(ValueError) as error:
        hccl_environment.hccl_ranks(dict(upper_half, **env))
    assert message in str(error.value) and '\n' not in str(error.value)


# ---------------------------------------------------------------- item 5: 1 device, 8p shell

@pytest.mark.parametrize('env', [{}, {'RANK_SIZE': '1', 'RANK_ID': '0', 'JOB_ID': '10087',
                                      'ASCEND_DEVICE_ID': '0'}])
def test_one_device_refuses_a_multi_device_rank_table(env):
    with pytest.raises(ValueError) as error:
        hccl_environment.hccl_ranks(dict(env, RANK_TABLE_FILE=EXAMPLE_TABLE))
    text = str(error.value)
    assert text.startswith('RANK_TABLE_FILE is set but RANK_SIZE=1')
    assert 'would start HCCL against that table (8 devices)' in text
    assert 'unset RANK_TABLE_FILE for a one-device run' in text and '\n' not in text


def test_a_one_device_rank_table_is_a_one_rank_hccl_job(tmp_path):
    """ModelZoo's 1p scripts used to export a one-device table: HCCL with one rank, checked."""
    env = {'RANK_ID': '0', 'ASCEND_DEVICE_ID': '0', 'JOB_ID': '10087',
           'RANK_TABLE_FILE': rank_table(str(tmp_path / 'table_1p.json'), [0])}
    assert hccl_environment.hccl_ranks(env) == (0, 1)
    del env['RANK_ID']
    with pytest.raises(ValueError, match='RANK_SIZE=1 but RANK_ID is not set'):
        hccl_environment.hccl_ranks(env)


def test_only_the_npu_minds_a_rank_table(monkeypatch):
    monkeypatch.setenv('RANK_TABLE_FILE', EXAMPLE_TABLE)
    monkeypatch.delenv('RANK_SIZE', raising=False)
    assert setup._hccl_ranks('cpu') == (0, 1)
    assert setup._hccl_ranks('gpu') == (0, 1)
    with pytest.raises(UsageError, match='RANK_TABLE_FILE is set but RANK_SIZE=1'):
        setup._hccl_ranks('npu')


@pytest.fixture(scope='module')
def data_path(tiny_data, tmp_path_factory):
    """The scripts' layout, <data_path>/tfrecords/ and <data_path>/lfw.bin, over tiny_data."""
    root = str(tmp_path_factory.mktemp('npu_environment'))
    os.symlink(tiny_data['records'], os.path.join(root, 'tfrecords'))
    os.symlink(os.path.join(tiny_data['raw'], 'lfw.bin'), os.path.join(root, 'lfw.bin'))
    return root


@pytest.mark.parametrize('script', ['train_full_1p.sh', 'train_performance_1p.sh'])
def test_1p_scripts_in_a_shell_set_up_for_8p(script, data_path, tmp_path):
    """`export RANK_TABLE_FILE=...` for 8p, then a 1p run on the stand-in: no HCCL, trains."""
    env = npu_environ(PYTHON=sys.executable, OUTPUT_DIR=str(tmp_path),
                      PYTHONPATH=os.pathsep.join([os.path.join(TEST_DIR, 'npu_standin'),
                                                  PROJECT_ROOT]),
                      RANK_TABLE_FILE=EXAMPLE_TABLE, RANK_SIZE='8', RANK_ID='5',
                      ASCEND_DEVICE_ID='0', JOB_ID='10087', CM_WORKER_SIZE='8')
    result = subprocess.run(
        ['bash', os.path.join(TEST_DIR, script), '--data_path=' + data_path, '--device=npu',
         '--net_depth=18', '--batch_size=4', '--max_steps=2', '--image_size', '32,32',
         '--eval_batch_size', '8', '--buffer_size', '16', '--show_info_interval', '1'],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)
    with open(os.path.join(str(tmp_path), '0', 'train_0.log')) as log:
        text = log.read()
    assert result.returncode == 0, result.stdout + result.stderr + text
    assert 'device npu' in text and 'step 2, total loss' in text
    assert 'all variables broadcast' not in text  # one process: no HCCL broadcast
    for name in ('RANK_TABLE_FILE', 'CM_WORKER_SIZE'):
        assert '%s: one device: %s=' % (script, name) in result.stdout
