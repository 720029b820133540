"""Fault injection: train_nets.py meets bad data, a failing disk and signals at bad moments.

Every case asserts the exit status, the one line the trainer writes, the step of
the last checkpoint, and that running again continues from it. CASES is also
the bad-input table of docs/reliability.md ("Bad input during a run"):
test_reliability_page_table_is_rendered_from_the_cases fails when the two differ,
and `python test/test_fault_injection.py --table` prints the table.

Faults inside the process (a kill inside a save, a signal inside validation, a
folder turning read-only, ENOSPC where no small file system can be mounted)
are set off at exact points by this module run as a launcher around
train_nets.py (`main` below): the product has no test-only code path.
"""
import collections
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from conftest import PROJECT_ROOT  # noqa: E402

Case = collections.namedtuple('Case', [
    'name',   # the case, as the table's first column (docs/reliability.md)
    'says',   # the line the tool writes; <placeholders> stand for run-dependent values
    'kept',   # what is kept, as the table's last column
    'code',   # exit status
])
# <shard>: a TFRecord shard; <ckpt>: a checkpoint path; <n>, <k>, <step>: numbers.
CASES = collections.OrderedDict((case.name, case) for case in [
    Case('corrupt JPEG in a shard',
         'bad record skipped: <shard> record <n>: its image does not decode to the training '
         'size; <k> bad records so far',
         'training goes on without the record (exit 0); it is counted once in the log line '
         '(`, <k> bad records skipped`) and the TensorBoard scalar `bad_records`', 0),
    Case('flipped bytes in a shard',
         'bad records skipped: <shard> is corrupted from record <n> on (the records cannot be '
         'read), <k> records lost; <k> bad records so far',
         'training goes on without the shard\'s rest (exit 0), counted as above', 0),
    Case('more bad records than `--max_bad_records` (default 100)',
         'training stopped at step <step>: more than --max_bad_records <n> bad records (<k>; '
         'the last: <shard> record <n>); checkpoint <ckpt>',
         'a checkpoint of the last completed step (exit 1)', 1),
    Case('checkpoint folder turns read-only during the run',
         'training stopped at step <step>: cannot write checkpoint <ckpt> (Permission '
         'denied); the last checkpoint is <ckpt>',
         'the last checkpoint written; the failed one leaves no files (exit 1)', 1),
    Case('disk full at a checkpoint',
         'training stopped at step <step>: cannot write checkpoint <ckpt> (No space left on '
         'device); the last checkpoint is <ckpt>',
         'the last checkpoint written; the failed one\'s partial files are removed (exit 1)', 1),
    Case('SIGKILL inside a checkpoint save',
         '(nothing: the process is killed)',
         'the previous checkpoint, which the next run resumes (killed: exit 137)', -9),
    Case('SIGTERM during validation',
         'stopped by signal 15 at step <step> (validation abandoned); checkpoint <ckpt>',
         'a checkpoint of the last completed step; validation stops at once (exit 143)', 143),
])
_PLACEHOLDERS = {'<shard>': r'\S+\.tfrecord', '<ckpt>': r'\S+InsightFace_iter_\d+\.ckpt',
                 '<n>': r'\d+', '<k>': r'\d+', '<step>': r'\d+'}
TABLE_START = '<!-- bad-input table: generated from test/test_fault_injection.py CASES -->'
TABLE_END = '<!-- end of bad-input table -->'


def render_table():
    """The bad-input table of docs/reliability.md, from CASES."""
    lines = [TABLE_START, '| Case | What train_nets.py says | What is kept |',
             '|---|---|---|']
    for case in CASES.values():
        says = case.says if case.says.startswith('(') else '`%s`' % case.says
        lines.append('| %s | %s | %s |' % (case.name, says, case.kept))
    return '\n'.join(lines + [TABLE_END])


def case_line(name, output):
    """The one line of `output` that CASES[name].says describes (its match)."""
    parts = re.split('(%s)' % '|'.join(_PLACEHOLDERS), CASES[name].says)
    pattern = ''.join(_PLACEHOLDERS.get(part, re.escape(part)) for part in parts)
    matches = [line for line in output.splitlines() if re.search(pattern, line)]
    assert len(matches) == 1, (pattern, output)
    return matches[0]


# ---- The launcher: train_nets.py with one fault set off at an exact point ----

def _nth_call(function, number, action):
    """function, wrapped to run action() before its number-th call."""
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == number:
            action()
        return function(*args, **kwargs)
    return wrapped


def _install_fault(fault, argv):
    kind, _, number = fault.partition(':')
    import tensorflow.compat.v1 as tf
    from tensorflow.python.training import saver as saver_module
    ckpt_path = argv[argv.index('--ckpt_path') + 1]
    if kind == 'stop_in_save':
        # After the files of the save are in place, before the `checkpoint` index names
        # them: the latest moment a kill can land. The test kills the stopped process.
        module = saver_module.checkpoint_management

        def stop():
            open(os.path.join(ckpt_path, '..', 'stopped_in_save'), 'w').close()
            os.kill(os.getpid(), signal.SIGSTOP)
        module.update_checkpoint_state_internal = _nth_call(
            module.update_checkpoint_state_internal, int(number), stop)
    elif kind == 'read_only_at_save':
        tf.train.Saver.save = _nth_call(tf.train.Saver.save, int(number),
                                        lambda: os.chmod(ckpt_path, 0o555))
    elif kind == 'enospc_at_save':
        # What TensorFlow raises when a write meets ENOSPC; used where no small file
        # system can be mounted.
        def full():
            raise tf.errors.ResourceExhaustedError(
                None, None, 'InsightFace_iter_0.ckpt_temp/part-00000-of-00001.data-00000-of-'
                '00001.tempstate1; No space left on device')
        tf.train.Saver.save = _nth_call(tf.train.Saver.save, int(number), full)
    elif kind == 'sigterm_in_validation':
        import verification
        verification.run_verification = _nth_call(
            verification.run_verification, int(number),
            lambda: os.kill(os.getpid(), signal.SIGTERM))
    else:
        raise ValueError('unknown fault %r' % fault)


def main(argv):
    """test_fault_injection.py FAULT train_nets.py-flags...: trains with FAULT set off."""
    if argv[:1] == ['--table']:
        print(render_table())
        return 0
    sys.path.insert(0, PROJECT_ROOT)
    os.chdir(PROJECT_ROOT)
    _install_fault(argv[0], argv[1:])
    import logging
    import train_nets
    logging.getLogger().handlers[:] = []
    return train_nets.main(argv[1:])


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))


# ---- The tests ----
import numpy as np  # noqa: E402
from conftest import truncate_jpeg  # noqa: E402
from test_train_nets import checkpoint_step, flags, read_events, without_write_override  # noqa

QUICK = ['--summary_histograms', 'False', '--validate_interval', '100000']


def run(args, fault=None, prefix=(), timeout=300):
    command = list(prefix) + [sys.executable]
    command += [os.path.abspath(__file__), fault] if fault else ['train_nets.py']
    return subprocess.run(command + list(args), cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout)


def assert_resumes(data, out, step, *extra):
    """Running again resumes from the checkpoint of `step` and trains step + 1."""
    result = run(flags(data, out, '--max_steps', str(step + 1), *(QUICK + list(extra))))
    assert result.returncode == 0, result.stdout
    assert 'resumed from %s' % os.path.join(out, 'ckpt', 'InsightFace_iter_%d.ckpt' % step) \
        in result.stdout, result.stdout
    assert re.search(r'total_step %d,' % (step + 1), result.stdout), result.stdout
    assert checkpoint_step(os.path.join(out, 'ckpt')) == step + 1


def no_traceback(output):
    assert 'Traceback' not in output, output


def copy_records(data, root):
    """A writable copy of the tiny data's TFRecords folder and its manifest."""
    target = os.path.join(root, 'records')
    shutil.copytree(data['records'], target)
    with open(os.path.join(target, 'manifest.json')) as manifest:
        return target, json.load(manifest)


def corrupt_jpeg(data, root, shard=0, record=5):
    """Replaces one record's JPEG by a truncated one; returns (data, shard path, record)."""
    folder, _ = copy_records(data, root)
    return dict(data, records=folder), truncate_jpeg(folder, shard, record), record


def flip_bytes(data, root, shard=1):
    """Flips one byte in the middle of a shard; returns (data, path, record hit, records)."""
    folder, manifest = copy_records(data, root)
    path = os.path.join(folder, manifest['shards'][shard]['file'])
    with open(path, 'rb') as shard_file:
        content = bytearray(shard_file.read())
    middle = len(content) // 2
    content[middle] ^= 0x5A
    with open(path, 'wb') as shard_file:
        shard_file.write(bytes(content))
    offset, record = 0, 0  # length (8), its CRC (4), data, data CRC (4)
    while True:
        end = offset + 16 + int(np.frombuffer(bytes(content[offset:offset + 8]), '<u8')[0])
        if end > middle:
            break
        offset, record = end, record + 1
    return dict(data, records=folder), path, record, manifest['shards'][shard]['num_images']


def test_reliability_page_table_is_rendered_from_the_cases():
    with open(os.path.join(PROJECT_ROOT, 'docs', 'reliability.md')) as page:
        text = page.read()
    assert render_table() in text, ('docs/reliability.md\'s bad-input table differs from CASES; '
                                    'print it with: python test/test_fault_injection.py --table')


def test_a_corrupt_jpeg_is_skipped_named_and_counted(tiny_data, tmp_path):
    out = str(tmp_path)
    data, shard, record = corrupt_jpeg(tiny_data, out)
    # 48 images, batch 4: by step 14 every record has passed once.
    result = run(flags(data, out, '--max_steps', '14', '--summary_interval', '7', *QUICK))
    no_traceback(result.stdout)
    assert result.returncode == CASES['corrupt JPEG in a shard'].code, result.stdout
    line = case_line('corrupt JPEG in a shard', result.stdout)
    assert '%s record %d:' % (shard, record) in line and line.endswith(' 1 bad records so far')
    assert re.search(r'total_step 14, .*, 1 bad records skipped', result.stdout)
    assert checkpoint_step(os.path.join(out, 'ckpt')) == 14
    by_step, _ = read_events(os.path.join(out, 'summary'))
    assert by_step[14]['bad_records'].simple_value == 1
    assert_resumes(data, out, 14)


def test_flipped_bytes_skip_the_rest_of_the_shard(tiny_data, tmp_path):
    out = str(tmp_path)
    data, shard, record, count = flip_bytes(tiny_data, out)
    result = run(flags(data, out, '--max_steps', '14', '--summary_interval', '7', *QUICK))
    no_traceback(result.stdout)
    assert result.returncode == CASES['flipped bytes in a shard'].code, result.stdout
    line = case_line('flipped bytes in a shard', result.stdout)
    lost = count - record
    assert ('%s is corrupted from record %d on (the records cannot be read), %d records lost; '
            '%d bad records so far' % (shard, record, lost, lost)) in line, line
    assert checkpoint_step(os.path.join(out, 'ckpt')) == 14
    by_step, _ = read_events(os.path.join(out, 'summary'))
    assert by_step[14]['bad_records'].simple_value == lost
    assert_resumes(data, out, 14)


def test_too_many_bad_records_stop_with_a_checkpoint(tiny_data, tmp_path):
    out = str(tmp_path)
    first = run(flags(tiny_data, out, '--max_steps', '3', *QUICK))
    assert first.returncode == 0, first.stdout
    data, shard, record = corrupt_jpeg(tiny_data, out)
    result = run(flags(data, out, '--max_steps', '100', '--max_bad_records', '0', *QUICK))
    no_traceback(result.stdout)
    name = 'more bad records than `--max_bad_records` (default 100)'
    assert result.returncode == CASES[name].code, result.stdout
    line = case_line(name, result.stdout)
    assert '(1; the last: %s record %d)' % (shard, record) in line, line
    step = int(re.search(r'stopped at step (\d+)', line).group(1))
    assert step >= 3 and checkpoint_step(os.path.join(out, 'ckpt')) == step
    assert line.endswith('; checkpoint %s' % os.path.join(out, 'ckpt', 'InsightFace_iter_%d.ckpt'
                                                          % step)), line
    assert_resumes(data, out, step, '--max_bad_records', '1')


def test_a_checkpoint_folder_turning_read_only_stops_keeping_the_last_checkpoint(
        tiny_data, tmp_path):
    out = str(tmp_path)
    ckpt = os.path.join(out, 'ckpt')
    try:
        result = run(flags(tiny_data, out, '--max_steps', '10', '--ckpt_interval', '1', *QUICK),
                     fault='read_only_at_save:3', prefix=without_write_override())
    finally:
        if os.path.isdir(ckpt):
            os.chmod(ckpt, 0o755)
    no_traceback(result.stdout)
    name = 'checkpoint folder turns read-only during the run'
    assert result.returncode == CASES[name].code, result.stdout
    line = case_line(name, result.stdout)
    assert line.endswith('training stopped at step 3: cannot write checkpoint %s (Permission '
                         'denied); the last checkpoint is %s'
                         % (os.path.join(ckpt, 'InsightFace_iter_3.ckpt'),
                            os.path.join(ckpt, 'InsightFace_iter_2.ckpt'))), line
    assert checkpoint_step(ckpt) == 2
    assert not glob.glob(os.path.join(ckpt, 'InsightFace_iter_3*'))
    assert_resumes(tiny_data, out, 2)


def _mount_tmpfs_command(size_bytes, folder, seed, command):
    """command in a private mount namespace where `folder` is a tmpfs of size_bytes
    holding a copy of `seed`; folder's content is copied to folder + '.out' at the
    end. None where mounting is not allowed (not root, no user namespaces)."""
    unshare = shutil.which('unshare')
    if unshare is None:
        return None
    probe = subprocess.run([unshare, '-m', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs "$0"',
                            seed], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode != 0:
        return None
    script = ('mount -t tmpfs -o size=%d tmpfs "$0" && cp -a "$1"/. "$0"/ || exit 99; shift; '
              '"$@"; code=$?; mkdir -p "$0.out" && cp -a "$0"/. "$0.out"/; exit $code'
              % size_bytes)
    return [unshare, '-m', 'sh', '-c', script, folder, seed] + command


def test_a_full_disk_at_a_save_stops_keeping_the_last_checkpoint(tiny_data, tmp_path):
    out = str(tmp_path)
    ckpt = os.path.join(out, 'ckpt')
    first = run(flags(tiny_data, out, '--max_steps', '2', *QUICK))
    assert first.returncode == 0, first.stdout
    used = sum(os.path.getsize(p) for p in glob.glob(os.path.join(ckpt, '**'), recursive=True)
               if os.path.isfile(p))
    data_size = os.path.getsize(glob.glob(os.path.join(ckpt, '*.data-*'))[0])
    # Room for what is there and half a checkpoint: the next save runs out of space.
    shutil.move(ckpt, ckpt + '.seed')
    os.mkdir(ckpt)
    args = flags(tiny_data, out, '--max_steps', '10', '--ckpt_interval', '1', *QUICK)
    command = _mount_tmpfs_command(used + data_size // 2 + (1 << 16), ckpt, ckpt + '.seed',
                                   [sys.executable, 'train_nets.py'] + args)
    if command is None:  # no small file system here: ENOSPC raised at the save
        os.rmdir(ckpt)
        shutil.move(ckpt + '.seed', ckpt)
        result = run(args, fault='enospc_at_save:1')
    else:
        result = subprocess.run(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
        os.rmdir(ckpt)  # the mount point, empty outside the namespace
        shutil.move(ckpt + '.out', ckpt)
    no_traceback(result.stdout)
    name = 'disk full at a checkpoint'
    assert result.returncode == CASES[name].code, result.stdout
    line = case_line(name, result.stdout)
    assert ('training stopped at step 3: cannot write checkpoint %s (No space left on device); '
            'the last checkpoint is %s' % (os.path.join(ckpt, 'InsightFace_iter_3.ckpt'),
                                           os.path.join(ckpt, 'InsightFace_iter_2.ckpt'))
            ) in line, line
    assert checkpoint_step(ckpt) == 2
    assert not glob.glob(os.path.join(ckpt, 'InsightFace_iter_3*'))
    assert_resumes(tiny_data, out, 2)


def test_sigkill_inside_a_save_resumes_from_the_previous_checkpoint(tiny_data, tmp_path):
    out = str(tmp_path)
    ckpt = os.path.join(out, 'ckpt')
    marker = os.path.join(out, 'stopped_in_save')
    command = [sys.executable, os.path.abspath(__file__), 'stop_in_save:3'] + flags(
        tiny_data, out, '--max_steps', '10', '--ckpt_interval', '1', *QUICK)
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    try:
        deadline = time.time() + 240
        while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert os.path.exists(marker), proc.communicate(timeout=60)[0]
        # The third save's files are written; the `checkpoint` index still names the second.
        assert os.path.exists(os.path.join(ckpt, 'InsightFace_iter_3.ckpt.index'))
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == CASES['SIGKILL inside a checkpoint save'].code, output
    no_traceback(output)
    assert checkpoint_step(ckpt) == 2
    assert_resumes(tiny_data, out, 2)


def test_sigterm_during_validation_abandons_it_and_saves(tiny_data, tmp_path):
    out = str(tmp_path)
    result = run(flags(tiny_data, out, '--max_steps', '10', '--validate_interval', '2',
                       '--summary_histograms', 'False'), fault='sigterm_in_validation:2')
    no_traceback(result.stdout)
    name = 'SIGTERM during validation'
    assert result.returncode == CASES[name].code, result.stdout
    line = case_line(name, result.stdout)
    ckpt = os.path.join(out, 'ckpt')
    assert line.endswith('stopped by signal 15 at step 4 (validation abandoned); checkpoint '
                         '%s' % os.path.join(ckpt, 'InsightFace_iter_4.ckpt')), line
    assert '[lfw][2]Accuracy-Flip' in result.stdout  # the first validation ran
    assert '[lfw][4]' not in result.stdout             # the second was abandoned
    assert checkpoint_step(ckpt) == 4
    assert_resumes(tiny_data, out, 4)
