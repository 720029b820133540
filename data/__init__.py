"""Data: insightface's RecordIO, the converters to TFRecords, the `.bin` verification sets,
the tf.data input pipeline, synthetic faces, and the command-line and safe-output helpers
every tool uses. The lowest layer: imports nothing of the project outside data/."""
