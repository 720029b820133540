"""The files of insightface's dataset layout, written from rendered synthetic faces.

train.rec/.idx (header record 0, the images, one record per identity) with the
`property` file, and a `.bin` verification set of LFW-ordered pairs of held-out
identities (data/make_synthetic_dataset.py describes the folder).
"""
import os
import pickle

import numpy as np

from data import recordio, recordio_writer
from data.synthetic import identities

NUM_FOLDS = 10  # LFW's protocol: the .bin is read as 10 consecutive folds


def write_train(folder, config, encoder, renderer, bar):
    """train.rec/.idx in insightface's layout, and the property file."""
    n_ids, per_id = config['num_identities'], config['images_per_identity']
    num_images = n_ids * per_id
    size = config['image_size']
    first_identity_key = num_images + 1
    # Image key of (identity, j) is 1 + identity * per_id + j, so chunks are
    # written in key order whatever their size.
    items = [(identity, j) for identity in range(n_ids) for j in range(per_id)]
    with recordio_writer.IndexedRecordWriter(os.path.join(folder, 'train.rec'),
                                             os.path.join(folder, 'train.idx')) as writer:
        # Record 0 first, as insightface's tools write it: readers find the
        # header at offset 0.
        writer.write(0, recordio.pack_insightface_header(first_identity_key,
                                                         first_identity_key + n_ids))
        key = 1
        for chunk, images in renderer(identities.TRAIN_STREAM, items):
            for (identity, _), jpeg in zip(chunk, encoder.encode(images)):
                writer.write(key, recordio.pack(recordio.IRHeader(0, float(identity), key, 0),
                                                jpeg))
                key += 1
            bar.update(len(chunk))
        for identity in range(n_ids):
            first_key = 1 + identity * per_id
            writer.write(first_identity_key + identity, recordio.pack(
                recordio.IRHeader(0, [first_key, first_key + per_id], 0, 0), b''))
    with open(os.path.join(folder, 'property'), 'w') as prop:
        prop.write('%d,%d,%d\n' % (n_ids, size[0], size[1]))


def plan_pairs(num_identities, num_pairs, rng):
    """Chooses the identities of LFW-style verification pairs.

    Args:
      num_identities: size of the held-out identity pool, >= 2.
      num_pairs: multiple of 20.
      rng: numpy.random.Generator.
    Returns:
      (pairs, issame): pairs is an int array [num_pairs, 2] of identity indices;
      issame a list of bool. Fold f is pairs [f * n, (f + 1) * n) with
      n = num_pairs / 10: its first n / 2 pairs are same-identity, the rest different.
    """
    per_fold = num_pairs // NUM_FOLDS
    pairs, issame = [], []
    for _ in range(NUM_FOLDS):
        for _ in range(per_fold // 2):
            identity = int(rng.integers(num_identities))
            pairs.append((identity, identity))
            issame.append(True)
        for _ in range(per_fold // 2):
            a, b = rng.choice(num_identities, 2, replace=False)
            pairs.append((int(a), int(b)))
            issame.append(False)
    return np.array(pairs, dtype=np.int64), issame


def write_bin(folder, name, stream, config, encoder, renderer, bar):
    """<name>.bin from held-out identities of seed `stream`; returns the pair plan."""
    # Five seed words: never the zero-padded form of an identity or image seed.
    pairs, issame = plan_pairs(config['num_val_identities'], config['num_val_pairs'],
                               np.random.default_rng([config['seed'], stream, 0, 0, 1]))
    # Image 2k + slot shows identity pairs[k, slot]; using 2k + slot as its image
    # index makes every image distinct, so the two images of a same pair differ.
    items = [(int(identity), index) for index, identity in enumerate(pairs.reshape(-1))]
    bins = []
    for chunk, images in renderer(stream, items):
        bins.extend(encoder.encode(images))
        bar.update(len(chunk))
    with open(os.path.join(folder, name + '.bin'), 'wb') as out:
        # Protocol 2 and plain bytes/bool lists, as insightface's lfw.bin.
        pickle.dump((bins, issame), out, protocol=2)
    return {'stream': stream, 'pair_identities': pairs.tolist()}
