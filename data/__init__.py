"""Data: insightface's RecordIO (recordio: the format; recordio_reader, recordio_writer), the
converters to TFRecord shards (mx2tfrecords, folder2tfrecords, over shard_writer,
shard_records and shard_workers), the `.bin` verification sets, the tf.data input pipeline
(input_pipeline, augmentation), synthetic faces (synthetic/, made into a dataset by
make_synthetic_dataset), and the command-line, progress-bar and safe-output helpers every
tool uses (cli, progress, safe_files). The lowest layer: imports nothing of the project
outside data/."""
