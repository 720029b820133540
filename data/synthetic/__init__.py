"""Synthetic faces: procedural cartoon identities and images, and the files of a dataset.

identities (who: parameters from per-identity seeds) → canvas, parts, camera (how an
image is drawn) → render (one image, a batch, a contact sheet); render_workers renders
in worker processes, jpeg_encoder encodes with TensorFlow, insightface_files writes
train.rec/.idx, property and the `.bin` pairs. The tool is data/make_synthetic_dataset.py.
Imports only data modules, numpy and TensorFlow.
"""
