"""Validation's own float32 graph and session, loaded with the training weights.

A session's mixed precision applies to every op it runs (see
runtime.inference_session_config), so an inference graph built inside the
training graph embeds in bfloat16 or float16 when the training does, and the
accuracy logged during training is not the one eval_ckpt_file.py reports for
the same checkpoint. Validation therefore runs the network's inference graphs
in a graph and session of their own, float32 by construction, and copies the
training session's current weights into them before each validation.

Typical use (trainer.py):
    validation = ValidationGraph(spec.net_depth, spec.image_size, ..., device, npu)
    validation.load(train_sess)   # the weights of the current step
    verification.run_verification(validation.session, validation.images,
                                  validation.embedding, ...)
"""
import time

import tensorflow.compat.v1 as tf

from devices import runtime
from nets import inference


class ValidationGraph(object):
    """The inference graphs validation runs, in their own float32 session.

    Attributes:
      images, embedding: the verification sets' placeholder and embedding.
      ijb_images, ijb_embedding: the same for IJB's 112x112 crops (None
        without IJB validation); the first pair when the sizes agree.
      batch_size: the static batch both are built for.
      session: the tf.Session running them.
      load_seconds: how long the last load() took.
    """

    def __init__(self, net_depth, net_width, norm, image_size, net_input_size, batch_size,
                 device, npu=None, num_threads=None, ijb_crop_size=None,
                 source_variables=None):
        """Builds the graphs and their session; the caller closes it (close()).

        Args:
          net_depth, net_width, norm: the network (nets.L_Resnet_E_IR).
          image_size: (height, width) of the verification sets' images.
          net_input_size: (height, width) the network trains at, or None (image_size).
          batch_size: static batch size of the embedding graphs.
          device: 'npu', 'gpu' or 'cpu'; npu: the training's NpuOptions (NPU only).
          num_threads: the session's threads (None: TensorFlow's choice).
          ijb_crop_size: IJB's crop size for IJB validation, else None.
          source_variables: the training graph's global variables; default the
            default graph's. Each variable of the inference graphs is copied from
            the one of the same name.
        Raises:
          ValueError: the training graph lacks a variable the inference graph needs.
        """
        source_variables = (tf.global_variables() if source_variables is None
                            else source_variables)
        by_name = {var.op.name: var for var in source_variables}
        self.batch_size = batch_size
        self.load_seconds = 0.0
        self._graph = tf.Graph()
        with self._graph.as_default():
            with runtime.inference_scope(device):
                self.images, self.embedding = inference.inference_graph(
                    net_depth, tuple(image_size), batch_size, net_input_size=net_input_size,
                    variant=net_width, norm=norm)
                self.ijb_images = self.ijb_embedding = None
                if ijb_crop_size is not None:
                    self.ijb_images, self.ijb_embedding = self.images, self.embedding
                    if tuple(image_size) != tuple(ijb_crop_size):
                        # IJB's crops are aligned at 112x112 and resized to what the
                        # network trains at, as eval_ijb.py --net_input_size does.
                        self.ijb_images, self.ijb_embedding = inference.inference_graph(
                            net_depth, tuple(ijb_crop_size), batch_size, reuse=True,
                            net_input_size=net_input_size or tuple(image_size),
                            variant=net_width, norm=norm)
            targets = tf.global_variables()
            missing = [var.op.name for var in targets if var.op.name not in by_name]
            if missing:
                raise ValueError('validation: the training graph has no variable %s'
                                 % ', '.join(missing[:3]))
            self._sources = [by_name[var.op.name] for var in targets]
            self._values = [tf.placeholder(var.dtype.base_dtype, var.shape,
                                           name='validation_value') for var in targets]
            self._assign = tf.group(*[tf.assign(var, value) for var, value
                                      in zip(targets, self._values)], name='load_weights')
        self._graph.finalize()
        self.session = tf.Session(graph=self._graph, config=runtime.inference_session_config(
            device, npu, num_threads=num_threads))

    def load(self, source_session):
        """Copies the weights (and batch-norm statistics) of `source_session` in."""
        start = time.time()
        values = source_session.run(self._sources)
        self.session.run(self._assign, dict(zip(self._values, values)))
        self.load_seconds = time.time() - start

    def close(self):
        self.session.close()
